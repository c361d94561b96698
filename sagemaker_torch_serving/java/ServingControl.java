package sagemaker.serving;

import com.amazonaws.ml.mms.wlm.ModelManager;
import java.io.IOException;
import java.util.List;
import software.amazon.ai.mms.servingsdk.Context;
import software.amazon.ai.mms.servingsdk.ModelServerEndpoint;
import software.amazon.ai.mms.servingsdk.annotations.Endpoint;
import software.amazon.ai.mms.servingsdk.annotations.helpers.EndpointTypes;
import software.amazon.ai.mms.servingsdk.http.Request;
import software.amazon.ai.mms.servingsdk.http.Response;

/**
 * The serving process's control of MMS, on the management API (a Unix socket only it uses).
 *
 * <p>GET /serving: {"loaded_workers": n, "draining": bool, "in_flight": n, "connections": n}:
 * in_flight counts the requests the serving port accepted and has not answered yet.
 * PUT /serving?batch_size=&max_batch_delay= sets batching on the loaded models: MMS gives
 * models loaded at start a batch size of 1 and only lets the registration API set it, but /invocations serves only models loaded at start;
 * MMS's batch aggregator reads both values on every batch, so setting them here takes effect
 * at once (the delay is waited only while requests queue: BatchDelay).
 * PUT /serving?draining=true turns /ping to 503 and stops the serving port accepting
 * connections (FrontDoor.stopAccepting), for a graceful shutdown.
 */
@Endpoint(
        urlPattern = "serving",
        endpointType = EndpointTypes.MANAGEMENT,
        description = "Readiness, batching and draining for the serving process")
public class ServingControl extends ModelServerEndpoint {
    @Override
    public void doGet(Request request, Response response, Context context) throws IOException {
        reply(response, context);
    }

    @Override
    public void doPut(Request request, Response response, Context context) throws IOException {
        String batchSize = first(request.getParameter("batch_size"));
        String maxBatchDelay = first(request.getParameter("max_batch_delay"));
        String draining = first(request.getParameter("draining"));
        try {
            for (com.amazonaws.ml.mms.wlm.Model model : ModelManager.getInstance().getModels().values()) {
                if (batchSize != null) {
                    model.setBatchSize(positive(batchSize));
                }
            }
            if (maxBatchDelay != null) {
                BatchDelay.configure(positive(maxBatchDelay));
            }
        } catch (NumberFormatException e) {
            ReadinessPing.sendJson(response, 400, "{\"message\": \"" + e.getMessage() + "\"}");
            return;
        }
        if (draining != null) {
            ReadinessPing.draining = Boolean.parseBoolean(draining);
            if (ReadinessPing.draining) {
                FrontDoor.stopAccepting();
            }
        }
        reply(response, context);
    }

    private static void reply(Response response, Context context) throws IOException {
        int loaded = ReadinessPing.loadedWorkers(context);
        String body = "{\"loaded_workers\": " + loaded + ", \"draining\": " + ReadinessPing.draining
                + ", \"in_flight\": " + FrontDoor.inFlight()
                + ", \"connections\": " + FrontDoor.connections();
        for (com.amazonaws.ml.mms.wlm.Model model : ModelManager.getInstance().getModels().values()) {
            body += ", \"batch_size\": " + model.getBatchSize()
                    + ", \"max_batch_delay\": " + BatchDelay.configured();
        }
        ReadinessPing.sendJson(response, 200, body + "}");
    }

    private static String first(List<String> values) {
        return values == null || values.isEmpty() ? null : values.get(0);
    }

    private static int positive(String value) {
        int number = Integer.parseInt(value);
        if (number < 0) {
            throw new NumberFormatException("negative value: " + value);
        }
        return number;
    }
}
