package sagemaker.serving;

import java.io.IOException;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import software.amazon.ai.mms.servingsdk.Context;
import software.amazon.ai.mms.servingsdk.Model;
import software.amazon.ai.mms.servingsdk.ModelServerEndpoint;
import software.amazon.ai.mms.servingsdk.Worker;
import software.amazon.ai.mms.servingsdk.annotations.Endpoint;
import software.amazon.ai.mms.servingsdk.annotations.helpers.EndpointTypes;
import software.amazon.ai.mms.servingsdk.http.Request;
import software.amazon.ai.mms.servingsdk.http.Response;

/**
 * GET /ping that tells the truth. MMS's own /ping answers 200 whatever its workers do; MMS
 * routes a plugin's endpoint before its own, so this one replaces it: 200 only while at least
 * one worker has the model loaded (on a multi-model endpoint: always) and the server is not
 * draining for shutdown, 503 otherwise.
 */
@Endpoint(
        urlPattern = "ping",
        endpointType = EndpointTypes.INFERENCE,
        description = "Readiness: 200 while a worker has the model loaded")
public class ReadinessPing extends ModelServerEndpoint {
    /** Set through ServingControl when the server starts to shut down. */
    static volatile boolean draining;

    /** Workers whose model is loaded (MMS's WORKER_MODEL_LOADED state). */
    static int loadedWorkers(Context context) {
        int loaded = 0;
        for (Model model : context.getModels().values()) {
            for (Worker worker : model.getModelWorkers()) {
                if (worker.isRunning()) {
                    loaded++;
                }
            }
        }
        return loaded;
    }

    static void sendJson(Response response, int status, String body) throws IOException {
        response.setStatus(status);
        response.setContentType("application/json");
        try (OutputStream out = response.getOutputStream()) {
            out.write(body.getBytes(StandardCharsets.UTF_8));
        }
    }

    @Override
    public void doGet(Request request, Response response, Context context) throws IOException {
        int loaded = loadedWorkers(context);
        // A 503's body has our error fields too; the front door adds its request_id.
        String body = "{\"status\": \"Healthy\", \"workers\": " + loaded + "}";
        if (draining) {
            body = "{\"code\": 503, \"message\": \"the server is shutting down\", "
                    + "\"status\": \"Draining\", \"workers\": " + loaded + "}";
        } else if (loaded == 0) {
            body = "{\"code\": 503, \"message\": \"no worker has the model loaded (yet)\", "
                    + "\"status\": \"Unhealthy\", \"workers\": 0}";
        }
        // A multi-model endpoint is ready with no model: SageMaker loads them through /models.
        boolean ready = !draining && (loaded > 0 || MultiModels.ENABLED);
        if (ready) {
            body = "{\"status\": \"Healthy\", \"workers\": " + loaded + "}";
        }
        sendJson(response, ready ? 200 : 503, body);
    }
}
