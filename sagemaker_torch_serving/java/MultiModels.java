package sagemaker.serving;

import com.amazonaws.ml.mms.archive.ModelException;
import com.amazonaws.ml.mms.http.ConflictStatusException;
import com.amazonaws.ml.mms.http.InferenceRequestHandler;
import com.amazonaws.ml.mms.util.ConfigManager;
import com.amazonaws.ml.mms.util.NettyUtils;
import com.amazonaws.ml.mms.wlm.ModelManager;
import com.google.gson.JsonArray;
import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import io.netty.channel.ChannelHandlerContext;
import io.netty.handler.codec.http.FullHttpRequest;
import io.netty.handler.codec.http.HttpMethod;
import io.netty.handler.codec.http.HttpResponseStatus;
import io.netty.handler.codec.http.QueryStringDecoder;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.stream.Stream;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import software.amazon.ai.mms.servingsdk.ModelServerEndpoint;

/**
 * A multi-model endpoint's model API on the serving port (SageMaker's container contract for
 * multi-model endpoints), on MMS's model manager: POST /models loads {"model_name", "url"} with
 * its own backend process and workers (the worker takes the model's directory and code/ from
 * MMS's load command), GET /models lists the loaded models a page at a time, GET and DELETE
 * /models/NAME describe and unload one. Everything else, invocations (/models/NAME/invoke)
 * among them, goes on to MMS's inference handler, which this extends: Java lets only a
 * subclass hand a request on to it.
 *
 * <p>Memory is checked before a load starts: the model's files once per worker, plus what a
 * model's processes cost besides (OVERHEAD_BYTES, measured: README), must fit in the memory
 * available (the host's, or the container's cgroup limit) less the loads in progress and
 * serving.memoryReserveBytes, else 507, which tells SageMaker to unload other models first.
 * A worker that runs out of memory anyway (or a GPU that has too little) answers 507 too.
 * Loads and unloads run on a thread of their own: they block for seconds, the event loop must
 * not.
 */
public final class MultiModels extends InferenceRequestHandler {
    public static final boolean ENABLED = Boolean.getBoolean("serving.multiModel");

    private static final Logger LOGGER = LoggerFactory.getLogger(MultiModels.class);
    private static final int WORKERS = Integer.getInteger("serving.workersPerModel", 1);
    private static final int BATCH_SIZE = Integer.getInteger("serving.batchSize", 1);
    private static final long STARTUP_SECONDS = Long.getLong("serving.startupTimeoutSeconds", 600);
    private static final String STARTUP_VARIABLE =
            System.getProperty("serving.startupTimeoutVariable", "SAGEMAKER_STARTUP_TIMEOUT");
    private static final long RESERVE = Long.getLong("serving.memoryReserveBytes", 512L << 20);
    private static final String RESERVE_VARIABLE =
            System.getProperty("serving.memoryReserveVariable", "SERVING_MEMORY_RESERVE_MB");
    private static final Path FAILURES =
            Paths.get(System.getProperty("serving.loadFailures", "load-failures"));
    /** A model's backend (Python with torch imported) and a worker's own pages, measured. */
    static final long BACKEND_BYTES = 224L << 20;
    static final long WORKER_BYTES = 64L << 20;
    private static final int PAGE = 100; // models per page of GET /models, at most
    private static final long FAILURE_WAIT_MILLIS = 2000;

    /** The loaded models, by name: their URLs. Only what this API loaded and not unloaded. */
    private static final Map<String, String> LOADED = new ConcurrentHashMap<>();
    /** Names being loaded or unloaded, and the memory the loads in progress will take. */
    private static final Set<String> BUSY = new HashSet<>();
    private static long pendingBytes;

    private static final ExecutorService LOADS =
            Executors.newCachedThreadPool(task -> {
                Thread thread = new Thread(task, "multi-model-load");
                thread.setDaemon(true);
                return thread;
            });

    public MultiModels(Map<String, ModelServerEndpoint> endpoints) {
        super(endpoints);
    }

    /** Whether a model name can be a path segment and a file name (SageMaker's are opaque). */
    static boolean validName(String name) {
        if (name.isEmpty() || name.length() > 255 || name.startsWith(".")) {
            return false;
        }
        for (char c : name.toCharArray()) {
            if (c <= 0x20 || c >= 0x7f || "/\\?#%\"".indexOf(c) >= 0) {
                return false;
            }
        }
        return true;
    }

    @Override
    protected void handleRequest(
            ChannelHandlerContext ctx, FullHttpRequest req, QueryStringDecoder decoder, String[] segments)
            throws ModelException {
        boolean ours = (segments.length == 2 || segments.length == 3) && "models".equals(segments[1]);
        if (!ours) {
            super.handleRequest(ctx, req, decoder, segments);
            return;
        }
        HttpMethod method = req.method();
        if (segments.length == 2 && HttpMethod.GET.equals(method)) {
            list(ctx, decoder);
        } else if (segments.length == 2) {
            String body = req.content().toString(StandardCharsets.UTF_8);
            LOADS.execute(() -> answer(ctx, () -> load(ctx, body)));
        } else if (HttpMethod.GET.equals(method)) {
            describe(ctx, segments[2]);
        } else {
            String name = segments[2];
            LOADS.execute(() -> answer(ctx, () -> unload(ctx, name)));
        }
    }

    private interface Call {
        void run() throws Exception;
    }

    /** Run a load or unload; whatever it throws is a 500 with a message, never a trace. */
    private static void answer(ChannelHandlerContext ctx, Call call) {
        try {
            call.run();
        } catch (Exception | Error e) {
            LOGGER.error("multi-model call failed", e);
            error(ctx, 500, "the model server failed: " + e);
        }
    }

    private static void load(ChannelHandlerContext ctx, String body) throws Exception {
        String name;
        String url;
        try {
            JsonObject request = JsonParser.parseString(body).getAsJsonObject();
            name = request.get("model_name").getAsString();
            url = request.get("url").getAsString();
        } catch (RuntimeException e) {
            error(ctx, 400, "send a JSON object {\"model_name\": ..., \"url\": ...}");
            return;
        }
        if (!validName(name)) {
            error(ctx, 400, "model_name must be 1 to 255 printable ASCII characters, without "
                    + "spaces, / \\ ? # % \" or a leading dot");
            return;
        }
        Path dir = Paths.get(url);
        if (!dir.isAbsolute() || url.contains("..") || !Files.isDirectory(dir)) {
            error(ctx, 400, "url must be the absolute path of the model's directory here, "
                    + "like /opt/ml/models/" + name + "/model; no such directory: " + url);
            return;
        }
        long need = WORKERS * (filesSize(dir) + WORKER_BYTES) + BACKEND_BYTES;
        synchronized (BUSY) {
            if (LOADED.containsKey(name) || BUSY.contains(name)) {
                error(ctx, 409, "model " + name + " is already loaded (or loading)");
                return;
            }
            long free = Memory.available() - pendingBytes - RESERVE;
            if (need > free) {
                error(ctx, 507, "not enough memory to load model " + name + ": it needs about "
                        + (need >> 20) + " MiB and " + Math.max(0, free >> 20)
                        + " MiB is free beyond the " + (RESERVE >> 20) + " MiB reserve ("
                        + RESERVE_VARIABLE + "); unload a model first");
                return;
            }
            pendingBytes += need;
            BUSY.add(name);
        }
        try {
            register(ctx, name, url);
        } finally {
            synchronized (BUSY) {
                pendingBytes -= need;
                BUSY.remove(name);
            }
        }
    }

    private static void register(ChannelHandlerContext ctx, String name, String url) throws Exception {
        long started = System.nanoTime();
        ModelManager models = ModelManager.getInstance();
        ConfigManager config = ConfigManager.getInstance();
        Path failure = FAILURES.resolve(name);
        Files.deleteIfExists(failure); // a reason left from an earlier load of this name
        try {
            models.registerModel(url, name, null, null, BATCH_SIZE, BatchDelay.now(),
                    config.getDefaultResponseTimeoutSeconds(), null, config.getPreloadModel());
        } catch (ConflictStatusException e) {
            error(ctx, 409, "model " + name + " is already loaded");
            return;
        } catch (ModelException e) {
            error(ctx, 400, "model " + name + " cannot be loaded from " + url + ": " + e.getMessage());
            return;
        } catch (IOException | TimeoutException | java.util.concurrent.ExecutionException e) {
            forget(name); // MMS leaves a model whose backend did not start registered
            error(ctx, 500, "the backend process of model " + name + " did not start: " + e);
            return;
        }
        HttpResponseStatus status;
        try {
            status = models.updateModel(name, WORKERS, WORKERS).get(STARTUP_SECONDS, TimeUnit.SECONDS);
        } catch (TimeoutException e) {
            forget(name);
            error(ctx, 500, "model " + name + " did not load within " + STARTUP_SECONDS + " s ("
                    + STARTUP_VARIABLE + ")");
            return;
        }
        if (HttpResponseStatus.OK.equals(status)) {
            LOADED.put(name, url);
            double seconds = (System.nanoTime() - started) / 1e9;
            LOGGER.info("loaded model {} from {} in {} s", name, url, String.format("%.2f", seconds));
            JsonObject answer = new JsonObject();
            answer.addProperty("status", "loaded");
            answer.addProperty("modelName", name);
            answer.addProperty("modelUrl", url);
            NettyUtils.sendJsonResponse(ctx, answer.toString(), HttpResponseStatus.OK);
            return;
        }
        JsonObject reason = readFailure(failure);
        forget(name);
        int code = status.code() == 507 ? 507 : 500;
        String message = "its worker did not start";
        if (reason != null) {
            code = reason.get("status").getAsInt() == 507 ? 507 : code;
            message = reason.get("message").getAsString();
        }
        LOGGER.error("model {} failed to load: {}", name, message);
        error(ctx, code, "model " + name + " failed to load: " + message);
    }

    /** Unregister a model whose load failed, whatever state MMS left it in. */
    private static void forget(String name) {
        try {
            ModelManager.getInstance().unregisterModel(name);
        } catch (RuntimeException e) { // MMS fails on a model whose backend never started
            ModelManager.getInstance().getModels().remove(name);
            LOGGER.warn("model {} was removed after a failed load: {}", name, e.toString());
        }
    }

    /** The worker's (or its backend's) reason for a failed load, which may lag MMS's word. */
    private static JsonObject readFailure(Path failure) throws IOException, InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(FAILURE_WAIT_MILLIS);
        while (!Files.exists(failure) && System.nanoTime() < deadline) {
            Thread.sleep(20);
        }
        if (!Files.exists(failure)) {
            return null;
        }
        JsonElement parsed = JsonParser.parseString(Files.readString(failure));
        Files.deleteIfExists(failure);
        return parsed.getAsJsonObject();
    }

    private static void unload(ChannelHandlerContext ctx, String name) {
        synchronized (BUSY) {
            if (!LOADED.containsKey(name) || BUSY.contains(name)) {
                error(ctx, 404, "model " + name + " is not loaded");
                return;
            }
            BUSY.add(name);
        }
        try {
            long started = System.nanoTime();
            HttpResponseStatus status = ModelManager.getInstance().unregisterModel(name);
            if (!HttpResponseStatus.OK.equals(status) && !HttpResponseStatus.NOT_FOUND.equals(status)) {
                error(ctx, 500, "model " + name + " could not be unloaded: " + status.reasonPhrase());
                return;
            }
            LOADED.remove(name);
            LOGGER.info("unloaded model {} in {} s", name,
                    String.format("%.2f", (System.nanoTime() - started) / 1e9));
            JsonObject answer = new JsonObject();
            answer.addProperty("status", "unloaded");
            answer.addProperty("modelName", name);
            NettyUtils.sendJsonResponse(ctx, answer.toString(), HttpResponseStatus.OK);
        } finally {
            synchronized (BUSY) {
                BUSY.remove(name);
            }
        }
    }

    private static void list(ChannelHandlerContext ctx, QueryStringDecoder decoder) {
        int start;
        int limit;
        try {
            start = Integer.parseInt(NettyUtils.getParameter(decoder, "next_page_token", "0"));
            limit = Integer.parseInt(NettyUtils.getParameter(decoder, "limit", "" + PAGE));
        } catch (NumberFormatException e) {
            start = -1;
            limit = 0;
        }
        List<String> names = new ArrayList<>(LOADED.keySet());
        Collections.sort(names);
        if (start < 0 || start > names.size() || limit < 1 || limit > PAGE) {
            error(ctx, 400, "next_page_token must be a token a previous GET /models gave, and "
                    + "limit (optional) 1 to " + PAGE);
            return;
        }
        int end = Math.min(names.size(), start + limit);
        JsonArray models = new JsonArray();
        for (String name : names.subList(start, end)) {
            models.add(entry(name, LOADED.get(name)));
        }
        JsonObject answer = new JsonObject();
        answer.add("models", models);
        if (end < names.size()) {
            answer.addProperty("nextPageToken", String.valueOf(end));
        }
        NettyUtils.sendJsonResponse(ctx, answer.toString(), HttpResponseStatus.OK);
    }

    private static void describe(ChannelHandlerContext ctx, String name) {
        String url = LOADED.get(name);
        if (url == null) {
            error(ctx, 404, "model " + name + " is not loaded");
            return;
        }
        NettyUtils.sendJsonResponse(ctx, entry(name, url).toString(), HttpResponseStatus.OK);
    }

    private static JsonObject entry(String name, String url) {
        JsonObject model = new JsonObject();
        model.addProperty("modelName", name);
        model.addProperty("modelUrl", url);
        return model;
    }

    /** Our error body (code, message, request_id), which the front door passes on as it is. */
    private static void error(ChannelHandlerContext ctx, int status, String message) {
        JsonObject body = new JsonObject();
        body.addProperty("code", status);
        body.addProperty("message", message);
        String id = NettyUtils.getRequestId(ctx.channel());
        body.addProperty("request_id", id == null ? "" : id);
        NettyUtils.sendJsonResponse(ctx, body.toString(), HttpResponseStatus.valueOf(status));
    }

    static long filesSize(Path dir) throws IOException {
        try (Stream<Path> paths = Files.walk(dir)) {
            return paths.filter(Files::isRegularFile).mapToLong(path -> {
                try {
                    return Files.size(path);
                } catch (IOException e) {
                    return 0;
                }
            }).sum();
        }
    }

    /** Memory a load may use: the host's available memory, or the container's, if less. */
    static final class Memory {
        private Memory() {}

        static long available() {
            long host = meminfo("MemAvailable:");
            long cgroup = cgroupFree();
            return cgroup < 0 ? host : Math.min(host, cgroup);
        }

        private static long meminfo(String key) {
            try {
                for (String line : Files.readAllLines(Paths.get("/proc/meminfo"))) {
                    if (line.startsWith(key)) {
                        return Long.parseLong(line.replaceAll("[^0-9]", "")) << 10;
                    }
                }
            } catch (IOException | NumberFormatException e) {
                LOGGER.warn("cannot read /proc/meminfo: {}", e.toString());
            }
            return Long.MAX_VALUE;
        }

        /** The cgroup's limit less its use (its reclaimable page cache aside), or -1: none. */
        private static long cgroupFree() {
            String[][] layouts = {
                {"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current",
                    "/sys/fs/cgroup/memory.stat", "inactive_file "},
                {"/sys/fs/cgroup/memory/memory.limit_in_bytes",
                    "/sys/fs/cgroup/memory/memory.usage_in_bytes",
                    "/sys/fs/cgroup/memory/memory.stat", "total_inactive_file "},
            };
            for (String[] layout : layouts) {
                try {
                    String limit = Files.readString(Paths.get(layout[0])).trim();
                    if ("max".equals(limit) || limit.length() > 18) { // no limit (v1: a huge number)
                        return -1;
                    }
                    long used = Long.parseLong(Files.readString(Paths.get(layout[1])).trim());
                    for (String line : Files.readAllLines(Paths.get(layout[2]))) {
                        if (line.startsWith(layout[3])) {
                            used -= Long.parseLong(line.substring(layout[3].length()).trim());
                        }
                    }
                    return Long.parseLong(limit) - used;
                } catch (IOException | NumberFormatException e) {
                    continue; // not this layout
                }
            }
            return -1;
        }
    }
}
