package sagemaker.serving;

import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import io.netty.buffer.Unpooled;
import io.netty.channel.Channel;
import io.netty.channel.ChannelDuplexHandler;
import io.netty.channel.ChannelHandler;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelInboundHandlerAdapter;
import io.netty.channel.ChannelOption;
import io.netty.channel.ChannelPipeline;
import io.netty.channel.ChannelPromise;
import io.netty.channel.epoll.EpollServerSocketChannel;
import io.netty.channel.socket.DuplexChannel;
import io.netty.channel.unix.Socket;
import io.netty.handler.codec.DecoderResult;
import io.netty.handler.codec.http.DefaultFullHttpResponse;
import io.netty.handler.codec.http.FullHttpResponse;
import io.netty.handler.codec.http.HttpContent;
import io.netty.handler.codec.http.HttpHeaderNames;
import io.netty.handler.codec.http.HttpHeaderValues;
import io.netty.handler.codec.http.HttpHeaders;
import io.netty.handler.codec.http.HttpObjectAggregator;
import io.netty.handler.codec.http.HttpRequest;
import io.netty.handler.codec.http.HttpResponse;
import io.netty.handler.codec.http.HttpResponseStatus;
import io.netty.handler.codec.http.HttpMethod;
import io.netty.handler.codec.http.HttpRequestDecoder;
import io.netty.handler.codec.http.HttpResponseEncoder;
import io.netty.handler.codec.http.HttpStatusClass;
import io.netty.handler.codec.http.HttpUtil;
import io.netty.handler.codec.http.HttpVersion;
import io.netty.handler.codec.http.LastHttpContent;
import io.netty.handler.codec.http.TooLongHttpHeaderException;
import io.netty.handler.codec.http.TooLongHttpLineException;
import io.netty.util.ReferenceCountUtil;
import io.netty.util.concurrent.ScheduledFuture;
import java.io.IOException;
import java.nio.ByteOrder;
import java.nio.MappedByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.nio.charset.StandardCharsets;
import java.util.ArrayDeque;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.UUID;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The serving port's front door, one per connection, between Netty's HTTP codec and MMS's
 * handlers (docs/architecture.md, "The serving port", says why each rule exists):
 *
 * <ul>
 *   <li>only SageMaker's endpoints reach MMS (GET /ping, POST /invocations, GET
 *       /execution-parameters, and on a multi-model endpoint /models, /models/NAME and POST
 *       /models/NAME/invoke, where /invocations names its model in the
 *       X-Amzn-SageMaker-Target-Model header); every other request, malformed HTTP,
 *       a body over the payload limit, a transfer-encoded body or an unknown Expect is answered
 *       here, 4xx with our JSON body, and the connection is closed after a lingering read;
 *   <li>one request at a time per connection: pipelined requests wait for the answer before
 *       theirs, so answers keep their order and their own X-Request-Id;
 *   <li>the connection stays open after an error MMS answered, where the client asked for it;
 *   <li>MMS's own error bodies are rewritten as ours: code, message, request_id;
 *   <li>a request must arrive whole within serving.requestReadSeconds of its first byte (else
 *       408), an idle connection is closed after serving.keepaliveSeconds;
 *   <li>while the server drains, answers close their connection and new connections get 503.
 * </ul>
 */
public final class FrontDoor extends ChannelDuplexHandler {
    /** The endpoints of the serving port and the one method of each (SageMaker's contract). */
    private static final Map<String, String> ROUTES =
            Map.of("/ping", "GET", "/invocations", "POST", "/execution-parameters", "GET");
    private static final String ENDPOINTS = MultiModels.ENABLED
            ? "GET /ping, POST /invocations, GET and POST /models, GET and DELETE /models/NAME "
                    + "and POST /models/NAME/invoke"
            : "GET /ping, POST /invocations and GET /execution-parameters";
    /** Where a multi-model endpoint's /invocations names its model (SageMaker's header). */
    static final String TARGET_MODEL = "X-Amzn-SageMaker-Target-Model";

    private static final Logger LOGGER = LoggerFactory.getLogger(FrontDoor.class);
    private static final long MAX_PAYLOAD = Long.getLong("serving.maxPayloadBytes", 6L << 20);
    private static final long READ_NANOS = seconds("serving.requestReadSeconds", 20);
    private static final long KEEPALIVE_NANOS = seconds("serving.keepaliveSeconds", 600);
    private static final String PAYLOAD_VARIABLE =
            System.getProperty("serving.payloadVariable", "SAGEMAKER_MAX_PAYLOAD_IN_MB");
    private static final String READ_VARIABLE =
            System.getProperty("serving.requestReadVariable", "SERVING_REQUEST_READ_SECONDS");
    /** Where the client's Content-Type travels when MMS must not see it (see prepare). */
    private static final String CONTENT_TYPE_HEADER =
            System.getProperty("serving.contentTypeHeader", "x-serving-content-type");

    private static final long LINGER_MILLIS = 2000;
    private static final int MAX_LINE = 4096;
    private static final int MAX_HEADERS = 8192;

    private static final AtomicInteger IN_FLIGHT = new AtomicInteger();
    /** IN_FLIGHT, published for the workers: a batch takes its share of the CPUs from it. */
    private static final MappedByteBuffer GAUGE = mapGauge(System.getProperty("serving.inFlightFile"));
    /** The serving port's listening socket, known from the first connection it accepted. */
    private static volatile Channel listener;
    private static final AtomicInteger CONNECTIONS = new AtomicInteger();

    private final boolean openedWhileDraining = ReadinessPing.draining;
    private final ArrayDeque<Object> held = new ArrayDeque<>();
    private final Decoder decoder = new Decoder();
    private boolean head; // the current request is a HEAD: its answer has no body
    private ChannelHandlerContext ctx;
    private ScheduledFuture<?> timer;
    private long readingSince = -1; // System.nanoTime() of the first byte of an unread request
    private long idleSince = System.nanoTime();
    private boolean forwarding; // the current request's body goes on to MMS
    private boolean awaiting; // the current request is with MMS; later ones wait their turn
    private boolean counted; // it counts in IN_FLIGHT
    private boolean keepAlive; // what the current request asked for
    private boolean closing; // answered with Connection: close; what still comes is dropped
    private boolean swallowClose; // MMS closes after every error; the client asked otherwise
    private String requestId; // ours, made only when MMS gives the request none (see id())

    private FrontDoor() {}

    /** Requests accepted on the serving port and not answered yet (the drain waits for 0). */
    static int inFlight() {
        return IN_FLIGHT.get();
    }

    static int connections() {
        return CONNECTIONS.get();
    }

    /** The serving port's pipeline: first-byte clock, HTTP codec, this, MMS's handlers. */
    public static void install(Channel ch, HttpObjectAggregator aggregator, ChannelHandler handler) {
        // MMS sets SO_LINGER 0, so every close resets the connection and may drop an answer
        // still in the socket's buffer; the system's default closes with a FIN.
        ch.config().setOption(ChannelOption.SO_LINGER, -1);
        if (listener == null) {
            listener = ch.parent();
        }
        FrontDoor door = new FrontDoor();
        ChannelPipeline pipeline = ch.pipeline();
        pipeline.addLast("first-byte", door.new FirstByte());
        pipeline.addLast("decoder", door.decoder);
        pipeline.addLast("encoder", new HttpResponseEncoder());
        pipeline.addLast("front-door", door);
        pipeline.addLast("aggregator", aggregator);
        pipeline.addLast("handler", handler);
    }

    /**
     * On a drain: new connections are refused from now on, while the connections open already
     * are served. Closing the listening channel would end MMS (its main thread waits on that),
     * so its socket is shut down for reading instead: Linux then refuses new connections. Where
     * that cannot be done (no epoll), new connections get a 503.
     */
    static void stopAccepting() {
        Channel channel = listener;
        if (!(channel instanceof EpollServerSocketChannel)) {
            return;
        }
        channel.eventLoop().execute(() -> {
            channel.config().setAutoRead(false);
            try {
                ((Socket) ((EpollServerSocketChannel) channel).fd()).shutdown(true, false);
            } catch (IOException | RuntimeException e) {
                LOGGER.warn("could not stop accepting connections: {}", e.toString());
            }
        });
    }

    private static long seconds(String property, long fallback) {
        return TimeUnit.SECONDS.toNanos(Long.getLong(property, fallback));
    }

    /** Netty's request decoder, which tells whether it holds part of a next request. */
    private static final class Decoder extends HttpRequestDecoder {
        Decoder() {
            super(MAX_LINE, MAX_HEADERS, 8192);
        }

        boolean holdsBytes() {
            return actualReadableBytes() > 0;
        }
    }

    /** Starts the read clock at a request's first byte, before the codec has a whole line. */
    private final class FirstByte extends ChannelInboundHandlerAdapter {
        @Override
        public void channelRead(ChannelHandlerContext context, Object msg) {
            if (readingSince < 0 && !awaiting && !closing) {
                readingSince = System.nanoTime();
            }
            context.fireChannelRead(msg);
        }
    }

    @Override
    public void handlerAdded(ChannelHandlerContext context) {
        ctx = context;
        CONNECTIONS.incrementAndGet();
        timer = context.executor().scheduleAtFixedRate(this::checkClocks, 1, 1, TimeUnit.SECONDS);
    }

    @Override
    public void handlerRemoved(ChannelHandlerContext context) {
        CONNECTIONS.decrementAndGet();
        timer.cancel(false);
        uncount();
        releaseHeld();
    }

    @Override
    public void channelRead(ChannelHandlerContext context, Object msg) {
        if (closing) {
            ReferenceCountUtil.release(msg);
            return;
        }
        held.add(msg);
        if (awaiting) { // pipelined: read no further until the answer before it is written
            context.channel().config().setAutoRead(false);
            return;
        }
        pump();
    }

    @Override
    public void exceptionCaught(ChannelHandlerContext context, Throwable cause) {
        if (cause instanceof IOException) { // the client went away: nothing to answer or log
            context.close();
            return;
        }
        context.fireExceptionCaught(cause);
    }

    /** Handle what has arrived, as far as the answer to the request before allows. */
    private void pump() {
        while (!awaiting && !closing && !held.isEmpty()) {
            Object msg = held.poll();
            if (msg instanceof HttpRequest) {
                start((HttpRequest) msg);
            } else if (msg instanceof HttpContent && forwarding) {
                forward(msg, msg instanceof LastHttpContent);
            } else {
                ReferenceCountUtil.release(msg); // the body of a request answered already
            }
        }
        if (closing) {
            releaseHeld();
        } else if (!awaiting && readingSince < 0 && decoder.holdsBytes()) {
            readingSince = System.nanoTime(); // part of a request came with the one before
        }
        if ((!awaiting || closing) && !ctx.channel().config().isAutoRead()) {
            ctx.channel().config().setAutoRead(true);
        }
    }

    private void start(HttpRequest request) {
        requestId = null;
        keepAlive = HttpUtil.isKeepAlive(request);
        head = HttpMethod.HEAD.equals(request.method());
        String refusal = refusal(request);
        if (refusal != null) {
            ReferenceCountUtil.release(request);
            return;
        }
        counted = true;
        IN_FLIGHT.incrementAndGet();
        publishInFlight();
        prepare(request);
        forwarding = true;
        forward(request, request instanceof LastHttpContent);
    }

    private void forward(Object msg, boolean last) {
        if (last) { // set first: MMS may answer within fireChannelRead
            forwarding = false;
            awaiting = true;
            readingSince = -1;
        }
        ctx.fireChannelRead(msg);
    }

    /** Answers a request that MMS must not see; null if it may go on. */
    private String refusal(HttpRequest request) {
        DecoderResult result = request.decoderResult();
        if (result.isFailure()) {
            Throwable cause = result.cause();
            if (cause instanceof TooLongHttpLineException) {
                return refuse(414, "the request line is longer than " + MAX_LINE + " bytes", null);
            }
            if (cause instanceof TooLongHttpHeaderException) {
                return refuse(431, "the request headers are larger than " + MAX_HEADERS + " bytes", null);
            }
            String detail = cause == null || cause.getMessage() == null ? "" : cause.getMessage();
            return refuse(400, "malformed HTTP request: " + clip(detail), null);
        }
        if (request.protocolVersion().majorVersion() != 1) {
            return refuse(400, "HTTP/1.1 only, not " + clip(request.protocolVersion().text()), null);
        }
        String path = path(request.uri());
        String methods = methods(path);
        if (methods == null) {
            return refuse(404, "no such endpoint: " + clip(path) + "; this port serves " + ENDPOINTS,
                    null);
        }
        if (!List.of(methods.split(", ")).contains(request.method().name())) {
            String used = clip(request.method().name());
            return refuse(405, used + " is not allowed on " + clip(path) + "; use " + methods,
                    methods);
        }
        if (MultiModels.ENABLED && "/invocations".equals(path)) {
            String target = request.headers().get(TARGET_MODEL);
            if (target == null || !MultiModels.validName(target)) {
                return refuse(400, "a multi-model endpoint serves /invocations for the model its "
                        + TARGET_MODEL + " header names (or use POST /models/NAME/invoke)", null);
            }
        }
        HttpHeaders headers = request.headers();
        if (headers.contains(HttpHeaderNames.TRANSFER_ENCODING)) {
            return refuse(411, "send the body with Content-Length: "
                    + "transfer-encoded (chunked) request bodies are refused", null);
        }
        String expect = headers.get(HttpHeaderNames.EXPECT);
        if (expect != null && !HttpHeaderValues.CONTINUE.contentEqualsIgnoreCase(expect.trim())) {
            return refuse(417, "only Expect: 100-continue is supported", null);
        }
        long length;
        try {
            length = HttpUtil.getContentLength(request, 0L);
        } catch (NumberFormatException e) {
            return refuse(400, "the Content-Length header is not a number", null);
        }
        if (length > MAX_PAYLOAD) {
            return refuse(413, "the request body of " + length + " bytes is over the " + MAX_PAYLOAD
                    + "-byte limit (" + PAYLOAD_VARIABLE + ")", null);
        }
        if (ReadinessPing.draining && openedWhileDraining) {
            return refuse(503, "the server is shutting down; send the request to another instance", null);
        }
        return null;
    }

    /** The methods of an endpoint of this port ("GET, DELETE"), or null: no such endpoint. */
    private static String methods(String path) {
        String fixed = ROUTES.get(path);
        if (fixed != null || !MultiModels.ENABLED) {
            return fixed;
        }
        if ("/models".equals(path)) {
            return "GET, POST";
        }
        String[] parts = path.split("/", -1); // "", "models", NAME[, "invoke"]
        if (parts.length < 3 || parts.length > 4 || !"models".equals(parts[1])
                || !MultiModels.validName(parts[2])) {
            return null;
        }
        if (parts.length == 3) {
            return "GET, DELETE";
        }
        return "invoke".equals(parts[3]) ? "POST" : null;
    }

    private String refuse(int status, String message, String allow) {
        FullHttpResponse response = errorResponse(status, message, id());
        if (head) { // the same headers as a GET's answer, and no body (RFC 9110)
            response = response.replace(Unpooled.EMPTY_BUFFER);
        }
        if (allow != null) {
            response.headers().set(HttpHeaderNames.ALLOW, allow);
        }
        answerAndClose(response);
        return message;
    }

    /**
     * What MMS is given: the path without its query (MMS would make the query into inputs and
     * look up a model by its model_name), and form bodies under another type: MMS parses
     * multipart and urlencoded bodies with Netty's HttpPostRequestDecoder (CVE-2024-29025 in
     * this Netty); the worker gets the client's Content-Type back from CONTENT_TYPE_HEADER.
     */
    private static void prepare(HttpRequest request) {
        String path = path(request.uri());
        HttpHeaders headers = request.headers();
        if (MultiModels.ENABLED && "/invocations".equals(path)) {
            path = "/models/" + headers.get(TARGET_MODEL) + "/invoke";
        }
        if (!"/models".equals(path)) { // GET /models keeps its next_page_token
            request.setUri(path);
        }
        headers.remove(CONTENT_TYPE_HEADER);
        String type = headers.get(HttpHeaderNames.CONTENT_TYPE);
        if (type != null) {
            String mime = type.trim().toLowerCase(Locale.ROOT);
            if (mime.startsWith("multipart/") || mime.startsWith("application/x-www-form-urlencoded")) {
                headers.set(CONTENT_TYPE_HEADER, type);
                headers.set(HttpHeaderNames.CONTENT_TYPE, HttpHeaderValues.APPLICATION_OCTET_STREAM);
            }
        }
    }

    private static String path(String uri) {
        int end = uri.length();
        for (char stop : new char[] {'?', '#'}) {
            int at = uri.indexOf(stop);
            if (at >= 0 && at < end) {
                end = at;
            }
        }
        return uri.substring(0, end);
    }

    @Override
    public void write(ChannelHandlerContext context, Object msg, ChannelPromise promise) {
        if (msg instanceof HttpResponse
                && ((HttpResponse) msg).status().codeClass() == HttpStatusClass.INFORMATIONAL) {
            context.write(msg, promise); // the aggregator's 100 Continue
            return;
        }
        boolean close = ReadinessPing.draining || !keepAlive;
        if (msg instanceof HttpResponse) {
            HttpResponse response = (HttpResponse) msg;
            if (msg instanceof FullHttpResponse && response.status().code() >= 400) {
                msg = ours((FullHttpResponse) msg);
                response = (HttpResponse) msg;
            }
            if (response.status().reasonPhrase().isEmpty()) { // the worker's answers have none
                response.setStatus(HttpResponseStatus.valueOf(response.status().code()));
            }
            HttpHeaders headers = response.headers();
            boolean mmsCloses =
                    headers.containsValue(HttpHeaderNames.CONNECTION, HttpHeaderValues.CLOSE, true);
            swallowClose = mmsCloses && !close;
            headers.set(
                    HttpHeaderNames.CONNECTION,
                    close ? HttpHeaderValues.CLOSE : HttpHeaderValues.KEEP_ALIVE);
        }
        if (!(msg instanceof LastHttpContent)) {
            context.write(msg, promise);
            return;
        }
        uncount();
        awaiting = false;
        idleSince = System.nanoTime();
        if (close) {
            closing = true;
            releaseHeld();
            context.write(msg, promise.unvoid()).addListener(f -> context.close());
        } else {
            context.write(msg, promise);
            context.executor().execute(this::pump);
        }
    }

    @Override
    public void close(ChannelHandlerContext context, ChannelPromise promise) {
        if (swallowClose) { // MMS's close after an error on a connection the client keeps
            swallowClose = false;
            promise.trySuccess();
            return;
        }
        context.close(promise);
    }

    /** Our error body in place of MMS's {code, type, message} (or an empty one). */
    private FullHttpResponse ours(FullHttpResponse response) {
        String id = response.headers().get("x-request-id");
        if (id == null) {
            id = id();
        }
        JsonObject body = null;
        try {
            JsonElement parsed = JsonParser.parseString(response.content().toString(StandardCharsets.UTF_8));
            body = parsed.isJsonObject() ? parsed.getAsJsonObject() : null;
        } catch (RuntimeException e) {
            body = null;
        }
        if (body != null && body.has("request_id")) {
            return response; // the worker's own
        }
        if (body != null && !body.has("type")) { // our /ping's: it knows no request id
            body.addProperty("request_id", id);
            byte[] bytes = (body.toString() + "\n").getBytes(StandardCharsets.UTF_8);
            FullHttpResponse replaced = response.replace(Unpooled.wrappedBuffer(bytes));
            replaced.headers().set(HttpHeaderNames.CONTENT_LENGTH, bytes.length);
            replaced.headers().set("X-Request-Id", id);
            response.release();
            return replaced;
        }
        String message = "";
        if (body != null && body.has("message") && body.get("message").isJsonPrimitive()) {
            message = body.get("message").getAsString();
        }
        int status = response.status().code();
        FullHttpResponse replaced = errorResponse(status, mmsMessage(status, message), id);
        String connection = response.headers().get(HttpHeaderNames.CONNECTION, "");
        replaced.headers().set(HttpHeaderNames.CONNECTION, connection);
        response.release();
        return replaced;
    }

    /** MMS's words, where they mean something to a client of SageMaker's contract. */
    private static String mmsMessage(int status, String message) {
        if (message.startsWith("Worker died")) {
            return "the worker serving this request died (out of memory, or a crash in native "
                    + "code); a new one is started";
        }
        if (status == 404 && message.startsWith("Model not found: ")) {
            return "model " + clip(message.substring(17)) + " is not loaded";
        }
        if (status == 503) {
            return "no worker is free to take the request (the model is loading or restarting, "
                    + "or the queue is full); retry shortly";
        }
        if (status == 507) {
            return "the worker ran out of memory on this request";
        }
        if (status == 408 || status == 504) {
            return "the model did not answer in time";
        }
        if (message.isEmpty() || message.contains("Exception") || message.contains("java.")) {
            HttpResponseStatus known = HttpResponseStatus.valueOf(status);
            return known.reasonPhrase().toLowerCase(Locale.ROOT);
        }
        return clip(message);
    }

    static FullHttpResponse errorResponse(int status, String message, String id) {
        JsonObject body = new JsonObject();
        body.addProperty("code", status);
        body.addProperty("message", message);
        body.addProperty("request_id", id);
        byte[] bytes = (body.toString() + "\n").getBytes(StandardCharsets.UTF_8);
        FullHttpResponse response = new DefaultFullHttpResponse(
                HttpVersion.HTTP_1_1, HttpResponseStatus.valueOf(status), Unpooled.wrappedBuffer(bytes));
        HttpHeaders headers = response.headers();
        headers.set(HttpHeaderNames.CONTENT_TYPE, HttpHeaderValues.APPLICATION_JSON);
        headers.set(HttpHeaderNames.CONTENT_LENGTH, bytes.length);
        headers.set("X-Request-Id", id);
        return response;
    }

    /** Answer, stop reading requests, and close once the client has had time to read it. */
    private void answerAndClose(FullHttpResponse response) {
        response.headers().set(HttpHeaderNames.CONNECTION, HttpHeaderValues.CLOSE);
        closing = true;
        uncount();
        releaseHeld();
        ctx.channel().config().setAutoRead(true); // read on, and drop, what the client still sends
        ctx.writeAndFlush(response).addListener(f -> lingerThenClose());
    }

    /**
     * A close with unread data resets the connection, and a client still sending its body
     * would lose the answer: so send a FIN first and read (and drop) for a moment.
     */
    private void lingerThenClose() {
        Channel channel = ctx.channel();
        if (channel instanceof DuplexChannel && channel.isActive()) {
            ((DuplexChannel) channel).shutdownOutput();
            ctx.executor().schedule(() -> ctx.close(), LINGER_MILLIS, TimeUnit.MILLISECONDS);
        } else {
            ctx.close();
        }
    }

    private void checkClocks() {
        if (closing) {
            return;
        }
        long now = System.nanoTime();
        if (readingSince >= 0 && now - readingSince > READ_NANOS) {
            requestId = null;
            answerAndClose(errorResponse(408, "the request did not arrive whole within "
                    + TimeUnit.NANOSECONDS.toSeconds(READ_NANOS) + " s (" + READ_VARIABLE + ")", id()));
        } else if (readingSince < 0 && !awaiting && !forwarding && held.isEmpty()
                && now - idleSince > KEEPALIVE_NANOS) {
            ctx.close();
        }
    }

    private String id() {
        if (requestId == null) {
            requestId = UUID.randomUUID().toString();
        }
        return requestId;
    }

    private void uncount() {
        if (counted) {
            counted = false;
            IN_FLIGHT.decrementAndGet();
            publishInFlight();
        }
    }

    private static MappedByteBuffer mapGauge(String path) {
        if (path == null) {
            return null;
        }
        try (FileChannel file = FileChannel.open(Path.of(path), StandardOpenOption.READ,
                StandardOpenOption.WRITE)) {
            MappedByteBuffer gauge = file.map(FileChannel.MapMode.READ_WRITE, 0, Integer.BYTES);
            gauge.order(ByteOrder.nativeOrder());
            return gauge;
        } catch (IOException | RuntimeException e) {
            LOGGER.warn("the workers cannot see the requests in flight: {}", e.toString());
            return null;
        }
    }

    /** The count as it is now: whichever change publishes last writes the latest value. */
    private static void publishInFlight() {
        BatchDelay.inFlight(IN_FLIGHT.get());
        if (GAUGE != null) {
            synchronized (GAUGE) {
                GAUGE.putInt(0, IN_FLIGHT.get());
            }
        }
    }

    private void releaseHeld() {
        for (Object msg; (msg = held.poll()) != null; ) {
            ReferenceCountUtil.release(msg);
        }
    }

    private static String clip(String text) {
        StringBuilder out = new StringBuilder();
        for (char c : text.toCharArray()) {
            if (out.length() >= 100) {
                return out.append("...").toString();
            }
            out.append(c < 0x20 || c == 0x7f ? '?' : c);
        }
        return out.toString();
    }
}
