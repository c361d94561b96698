package com.amazonaws.ml.mms;

import com.amazonaws.ml.mms.http.ApiDescriptionRequestHandler;
import com.amazonaws.ml.mms.http.HttpRequestHandler;
import com.amazonaws.ml.mms.http.HttpRequestHandlerChain;
import com.amazonaws.ml.mms.http.InferenceRequestHandler;
import com.amazonaws.ml.mms.http.InvalidRequestHandler;
import com.amazonaws.ml.mms.http.ManagementRequestHandler;
import com.amazonaws.ml.mms.servingsdk.impl.PluginsManager;
import com.amazonaws.ml.mms.util.ConfigManager;
import com.amazonaws.ml.mms.util.ConnectorType;
import io.netty.channel.Channel;
import io.netty.channel.ChannelInitializer;
import io.netty.channel.ChannelPipeline;
import io.netty.handler.codec.http.HttpObjectAggregator;
import io.netty.handler.codec.http.HttpServerCodec;
import io.netty.handler.ssl.SslContext;
import java.util.Map;
import sagemaker.serving.FrontDoor;
import sagemaker.serving.MultiModels;
import software.amazon.ai.mms.servingsdk.ModelServerEndpoint;

/**
 * The pipeline of each accepted connection. It has MMS's class name and comes before MMS's jar
 * on the class path, so it replaces MMS's own: on the serving port, FrontDoor's guards sit
 * around Netty's HTTP codec (docs/architecture.md, "The serving port"), and the handler chain
 * is MMS's inference handler alone, whose plugin endpoints include our /ping (on a multi-model
 * endpoint, MultiModels' model API first). The management
 * connector (a Unix socket only the serving process uses) keeps MMS's chain.
 */
public class ServerInitializer extends ChannelInitializer<Channel> {
    private final ConnectorType connectorType;
    private final SslContext sslCtx;

    public ServerInitializer(SslContext sslCtx, ConnectorType type) {
        this.sslCtx = sslCtx;
        this.connectorType = type;
    }

    @Override
    public void initChannel(Channel ch) {
        ChannelPipeline pipeline = ch.pipeline();
        int maxRequestSize = ConfigManager.getInstance().getMaxRequestSize();
        if (sslCtx != null) {
            pipeline.addLast("ssl", sslCtx.newHandler(ch.alloc()));
        }
        if (connectorType == ConnectorType.MANAGEMENT_CONNECTOR) {
            HttpRequestHandlerChain head = new ApiDescriptionRequestHandler(connectorType);
            head.setNextHandler(
                            new ManagementRequestHandler(
                                    PluginsManager.getInstance().getManagementEndpoints()))
                    .setNextHandler(new InvalidRequestHandler());
            pipeline.addLast("http", new HttpServerCodec());
            pipeline.addLast("aggregator", new HttpObjectAggregator(maxRequestSize));
            pipeline.addLast("handler", new HttpRequestHandler(head));
            return;
        }
        // A multi-model endpoint's model API (/models, /models/NAME) comes first.
        Map<String, ModelServerEndpoint> endpoints =
                PluginsManager.getInstance().getInferenceEndpoints();
        HttpRequestHandlerChain head = MultiModels.ENABLED
                ? new MultiModels(endpoints)
                : new InferenceRequestHandler(endpoints);
        head.setNextHandler(new InvalidRequestHandler());
        FrontDoor.install(ch, new HttpObjectAggregator(maxRequestSize), new HttpRequestHandler(head));
    }
}
