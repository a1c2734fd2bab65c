//! Trace export: the OpenTelemetry SDK and its OTLP exporter (HTTP, protobuf bodies), fed by
//! the actors' spans through `tracing-opentelemetry` (see `switchboard_actors::traces`).
//!
//! The batch processor exports from a thread of its own with a blocking HTTP client, so it
//! needs no async runtime and never runs on an actor's thread. The standard `OTEL_BSP_*`
//! variables tune it (e.g. `OTEL_BSP_SCHEDULE_DELAY`, default 5000 ms).

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, Tracer};

/// How long one export request may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// A running exporter: the tracer the log layer feeds, and the provider to flush at exit.
pub struct Exporter {
    /// Hands spans to the batch processor.
    pub tracer: Tracer,
    /// Flushed and stopped by [`Exporter::shutdown`].
    provider: SdkTracerProvider,
}

impl Exporter {
    /// An exporter to `{endpoint}/v1/traces` for node `node_id`, sampling `ratio` of the traces
    /// this node starts (a remote parent's decision is kept).
    pub fn start(endpoint: &str, ratio: f64, node_id: &str) -> Result<Exporter, String> {
        let exporter = SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| e.to_string())?;
        let resource = Resource::builder()
            .with_service_name("switchboard")
            .with_attributes([
                KeyValue::new("service.instance.id", node_id.to_owned()),
                KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            ])
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                ratio,
            ))))
            .with_resource(resource)
            .build();
        Ok(Exporter {
            tracer: provider.tracer("switchboard"),
            provider,
        })
    }

    /// Export what is still queued and stop (blocks: call it off the async threads).
    pub fn shutdown(self) {
        if let Err(err) = self.provider.shutdown() {
            tracing::warn!(%err, "trace exporter did not flush");
        }
    }
}
