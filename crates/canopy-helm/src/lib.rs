//! Helm-chart applications, the parts that stand on their own: fetching charts from an
//! application's HELM registry into a bounded cache, rendering them with the Helm CLI under
//! limits, and reading the rendered manifests into what a Canopy edge must run.
//!
//! The reference's packages are Helm charts; Canopy's edges run containers without Kubernetes.
//! The control plane bridges the two: it fetches and renders each chart once per (deployment,
//! application, values), reads the manifests into an [`AppModel`] (workloads, services,
//! volumes, warnings), and hands edges that, never the chart.
//!
//! ```text
//! ChartSource ──ChartFetcher::fetch──▶ FetchedChart (checked archive, cached by digest)
//!   profile + overrides ──chart_values──▶ ChartValues
//! FetchedChart + ChartValues ──Renderer::render (helm template)──▶ RenderedChart (documents)
//! documents ──analyze──▶ AppModel
//! ```
//!
//! - [`source`]: registry URL, chart, version and credentials, checked.
//! - [`fetch`] (with [`oci`], [`repo`], [`cache`], [`archive`]): OCI registries and
//!   `index.yaml` repositories, timeouts and byte bounds on every call, a content-addressed
//!   cache with LRU collection, outage fallback and coalescing, hostile-archive checks.
//! - [`import`]: the reference's chart import (URL, version choice, the generated registry,
//!   application and package).
//! - [`helm`]: finding the Helm CLI and checking its version (call at start).
//! - [`values`]: profile values, overrides and parameter templates (the same rules as native
//!   templates).
//! - [`render`]: `helm template` with time, memory and output bounds; [`render_key`].
//! - [`manifest`] and [`analyze`]: rendered YAML → typed objects → [`AppModel`].
//!
//! Must not depend on the server, the store, the agent or any driver: it is used by the control
//! plane and may be used by tools. It depends on `canopy-core` only for the hardened YAML
//! reader, the catalog types and the parameter-template rules, which it does not change.

pub mod analyze;
pub mod archive;
pub mod cache;
mod error;
pub mod fetch;
pub mod helm;
mod http;
pub mod import;
pub mod manifest;
pub mod model;
pub mod oci;
pub mod render;
mod repo;
pub mod source;
pub mod values;

pub use analyze::{AnalyzeError, AnalyzeOptions, analyze};
pub use archive::{ArchiveLimits, ChartMeta};
pub use cache::{CacheConfig, ChartCache, ChartDigest, GcReport};
pub use error::FetchError;
pub use fetch::{ChartFetcher, FetchLimits, FetchStats, FetchedChart, Origin, PlainHttp};
pub use helm::{HelmBinary, HelmError, HelmVersion};
pub use manifest::{Document, ManifestError};
pub use model::AppModel;
pub use render::{
    RenderError, RenderKey, RenderLimits, RenderRequest, RenderedChart, Renderer, render_key,
};
pub use source::{ChartSource, Credentials};
pub use values::{ChartValues, Placeholders, ValuesError, chart_values, substitute_placeholders};
