package com.amazonaws.ml.mms.util.codec;

import com.amazonaws.ml.mms.util.messages.ModelWorkerResponse;
import com.amazonaws.ml.mms.util.messages.Predictions;
import io.netty.buffer.ByteBuf;
import io.netty.channel.ChannelHandlerContext;
import io.netty.handler.codec.ByteToMessageDecoder;
import io.netty.handler.codec.CorruptedFrameException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * Decodes a Python worker's answer to a batch. It has MMS's class name and comes before MMS's
 * jar on the class path, so it replaces MMS's own decoder, which waits for more bytes when a
 * frame is incomplete everywhere except inside a request's response headers: there it throws
 * CorruptedFrameException ("Invalid message size: -3") and MMS drops the worker's connection.
 * That happens whenever an answer with a header is split across socket reads, as batches of
 * larger answers are. This decoder reads nothing until the whole frame has arrived.
 *
 * <p>The frame, as the worker writes it (mms/protocol/otf_message_handler.py): int code, string
 * message, then per request: string request id, string content type, int status, string reason
 * phrase, int header count and that many string pairs, bytes body; then int -1. A string or
 * bytes is an int length and that many bytes.
 */
public class ModelResponseDecoder extends ByteToMessageDecoder {
    private static final int END = -1;
    private final int maxBufferSize;

    public ModelResponseDecoder(int maxBufferSize) {
        this.maxBufferSize = maxBufferSize;
    }

    @Override
    protected void decode(ChannelHandlerContext ctx, ByteBuf in, List<Object> out) {
        if (!complete(in)) {
            return;
        }
        ModelWorkerResponse response = new ModelWorkerResponse();
        response.setCode(in.readInt());
        response.setMessage(readString(in, in.readInt()));
        List<Predictions> predictions = new ArrayList<>();
        for (int length = in.readInt(); length != END; length = in.readInt()) {
            Predictions prediction = new Predictions();
            prediction.setRequestId(readString(in, length));
            prediction.setContentType(readString(in, in.readInt()));
            prediction.setStatusCode(in.readInt());
            prediction.setReasonPhrase(readString(in, in.readInt()));
            int headers = in.readInt();
            Map<String, String> map = new HashMap<>();
            for (int i = 0; i < headers; i++) {
                String name = readString(in, in.readInt());
                map.put(name, readString(in, in.readInt()));
            }
            prediction.setHeaders(map);
            byte[] body = new byte[in.readInt()];
            in.readBytes(body);
            prediction.setResp(body);
            predictions.add(prediction);
        }
        response.setPredictions(predictions);
        out.add(response);
    }

    /** Whether the next whole frame is readable; looks without reading. */
    private boolean complete(ByteBuf in) {
        int at = in.readerIndex();
        int end = in.writerIndex();
        if (end - at < 4) {
            return false;
        }
        at += 4; // code
        at = skipField(in, at, end); // message
        while (at >= 0) {
            if (end - at < 4) {
                return false;
            }
            int length = in.getInt(at);
            if (length == END) {
                return true;
            }
            at = skip(at + 4, end, check(length)); // request id
            at = skipField(in, at, end); // content type
            at = at < 0 || end - at < 4 ? -1 : at + 4; // status
            at = skipField(in, at, end); // reason phrase
            if (at < 0 || end - at < 4) {
                return false;
            }
            int headers = check(in.getInt(at));
            at += 4;
            for (int i = 0; i < 2 * headers && at >= 0; i++) {
                at = skipField(in, at, end);
            }
            at = skipField(in, at, end); // body
        }
        return false;
    }

    /** The index after a length-prefixed field at {@code at}, or -1 if it has not all arrived. */
    private int skipField(ByteBuf in, int at, int end) {
        if (at < 0 || end - at < 4) {
            return -1;
        }
        return skip(at + 4, end, check(in.getInt(at)));
    }

    private static int skip(int at, int end, int length) {
        return end - at < length ? -1 : at + length;
    }

    private int check(int length) {
        if (length < 0 || length > maxBufferSize) {
            throw new CorruptedFrameException("Invalid message size: " + length);
        }
        return length;
    }

    private static String readString(ByteBuf in, int length) {
        byte[] bytes = new byte[length];
        in.readBytes(bytes);
        return new String(bytes, StandardCharsets.UTF_8);
    }
}
