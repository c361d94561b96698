package sagemaker.serving;

import com.amazonaws.ml.mms.wlm.Model;
import com.amazonaws.ml.mms.wlm.ModelManager;
import java.util.Collection;

/**
 * MMS's batch delay, waited only while requests queue. MMS's aggregator waits up to the delay
 * for a fuller batch after the first request of each, also when nothing else could come: a lone
 * request would wait the whole delay for nothing. So the models have the configured delay only
 * while more requests are in flight than they have workers (more than the workers can take at
 * once, so that waiting fills batches), and none otherwise. The aggregator reads the delay
 * when a worker starts waiting for its next batch: the requests in flight then decide it.
 */
final class BatchDelay {
    private static volatile int configured = Integer.getInteger("serving.maxBatchDelay", 5);
    private static volatile boolean queueing;

    private BatchDelay() {}

    /** The delay asked for (SERVING_MAX_BATCH_DELAY_MS), whatever the models have now. */
    static int configured() {
        return configured;
    }

    /** The delay a model has now (for one registered now). */
    static int now() {
        return queueing ? configured : 0;
    }

    static synchronized void configure(int delay) {
        configured = delay;
        apply(queueing);
    }

    /** After every change of the requests in flight (FrontDoor). */
    static void inFlight(int count) {
        Collection<Model> models = ModelManager.getInstance().getModels().values();
        int workers = 0;
        for (Model model : models) {
            workers += model.getMaxWorkers();
        }
        boolean queue = count > workers;
        if (queue != queueing) {
            synchronized (BatchDelay.class) {
                apply(queue);
            }
        }
    }

    private static void apply(boolean queue) {
        queueing = queue;
        for (Model model : ModelManager.getInstance().getModels().values()) {
            model.setMaxBatchDelay(queue ? configured : 0);
        }
    }
}
