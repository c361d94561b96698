package sagemaker.serving;

import java.io.IOException;
import software.amazon.ai.mms.servingsdk.Context;
import software.amazon.ai.mms.servingsdk.ModelServerEndpoint;
import software.amazon.ai.mms.servingsdk.annotations.Endpoint;
import software.amazon.ai.mms.servingsdk.annotations.helpers.EndpointTypes;
import software.amazon.ai.mms.servingsdk.http.Request;
import software.amazon.ai.mms.servingsdk.http.Response;

/**
 * GET /execution-parameters, which batch transform asks a container before it sends data: how
 * many requests at once (one per worker by default), MultiRecord or SingleRecord (the API's
 * spelling, which the SDK's local mode requires), and the payload limit in MB. A transform job's
 * own settings take precedence over these. The values come from the serving process's settings
 * (server/mms_config.py passes them as -Dserving.* properties).
 */
@Endpoint(
        urlPattern = "execution-parameters",
        endpointType = EndpointTypes.INFERENCE,
        description = "Batch transform's execution parameters")
public class ExecutionParameters extends ModelServerEndpoint {
    @Override
    public void doGet(Request request, Response response, Context context) throws IOException {
        String body = "{\"MaxConcurrentTransforms\": "
                + Integer.getInteger("serving.maxConcurrentTransforms", 1)
                + ", \"BatchStrategy\": \""
                + System.getProperty("serving.batchStrategy", "MultiRecord")
                + "\", \"MaxPayloadInMB\": "
                + Integer.getInteger("serving.maxPayloadMb", 6)
                + "}";
        ReadinessPing.sendJson(response, 200, body);
    }
}
