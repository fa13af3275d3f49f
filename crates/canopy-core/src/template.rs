//! Workload templates of native applications (a Canopy extension of the reference catalog; the
//! format is documented in `docs/TEMPLATE-FORMAT.md`).
//!
//! A native [`Application`] carries `workloadTemplate` instead of a Helm chart: Jinja-style text
//! (rendered with [minijinja]) that must produce one YAML document describing the app's
//! containers and virtual machines. Rendering goes through these steps, each an error naming
//! the application, the profile and the field:
//!
//! 1. the deployment's override values get the profile's parameter templates applied
//!    ([`apply_parameter_templates`]: coerced to their type, mandatory ones required);
//! 2. they are deep-merged over the profile's values ([`merge_values`]); parameters that are
//!    still unset take their `default`;
//! 3. the template is rendered with `values`, `deployment`, `app`, `profile` and `project` in its
//!    context (strict undefined: an unknown name is an error naming it; no auto-escaping; no
//!    file loader; a bounded amount of work);
//! 4. the output is read through [`crate::yaml`] (the hardened reader), checked against the
//!    committed JSON Schema ([`SCHEMA_JSON`], so errors name the field, e.g.
//!    `containers[0].ports[1].hostPort`), deserialized with `deny_unknown_fields` and checked for
//!    the rules a schema cannot say (unique names and host ports, memory sizes, ...);
//! 5. the containers become [`canopy_proto::ContainerSpec`]s (images resolved against the app's
//!    image registry) and the VMs [`canopy_proto::VmSpec`]s (registry paths resolved the same
//!    way), together a [`Workloads`].
//!
//! [`check_template`] runs the same steps at upload with each profile's values, so syntax and
//! structure errors surface there; errors that depend on override values surface at deploy.
//! Mandatory parameters have no value at upload and get placeholders; a VM file's `url` or
//! `sha256` (and its `cpus`, `memory`, disk size) that is exactly a placeholder is not held
//! against the package, since the real value only comes with the deployment — where it is
//! checked like any other.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use minijinja::value::ValueKind;
use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior};
use serde_json::Value;

use crate::catalog::{Application, Profile};
use crate::policy::ProjectPolicy;

mod data;
mod format;
mod values;

pub(crate) use format::registry_prefix;
pub use format::{
    CLOUD_INIT_MAX_BYTES, Container, HealthCheckTemplate, PortTemplate, Resources,
    VM_MAX_MEMORY_MIB, VM_MIN_MEMORY_MIB, VmCloudInitTemplate, VmDiskTemplate, VmPortTemplate,
    VmSourceTemplate, VmTemplate, VolumeTemplate, WorkloadDocument, Workloads, image_registry_auth,
    parse_memory, resolve_image, vm_memory_mib, vm_url,
};
pub use values::{
    SECRET_MASK, Seg, apply_parameter_templates, mask_secrets, merge_values, parse_path,
    set as set_path, unmask_secrets,
};

/// The JSON Schema (draft 2020-12) of a rendered workload template.
pub const SCHEMA_JSON: &str = include_str!("../schema/workload-template.schema.json");
/// Largest workload template text.
pub const TEMPLATE_MAX_BYTES: usize = 1_000_000;
/// Largest rendered document.
pub const RENDERED_MAX_BYTES: usize = 1_000_000;
/// Work one rendering may do (minijinja fuel: about one unit per instruction, and per 64 bytes
/// allocated). Real templates use a few thousand.
pub const RENDER_FUEL: u64 = 500_000;

/// Most items of a list or mapping printed with `{{ }}`.
const MAX_PRINTED_ITEMS: usize = 10_000;

/// The name the template has in the engine (and in its own error messages).
const TEMPLATE_NAME: &str = "workloadTemplate";

/// The image registry `rootUrl` assumed at upload for an application that names an image
/// registry: the real one is only looked up at deploy, and registry paths of VM files must
/// still be checked. Never leaves [`check_template`].
const UPLOAD_REGISTRY_STAND_IN: &str = "https://image-registry.invalid";

/// Something wrong with a workload template, its values or its rendered output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct TemplateError {
    /// `name:version` of the application (empty when not known where the error arose).
    pub application: String,
    /// The profile whose values were used (empty when none).
    pub profile: String,
    /// Where: `workloadTemplate` (the template text, line in the message), `chartValues`,
    /// `values.<parameter>`, or a path into the rendered document such as
    /// `containers[0].ports[1].hostPort`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.application.is_empty() {
            write!(f, "application {} ", self.application)?;
        }
        if !self.profile.is_empty() {
            write!(f, "profile {} ", self.profile)?;
        }
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

impl TemplateError {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> TemplateError {
        TemplateError {
            application: String::new(),
            profile: String::new(),
            field: field.into(),
            message: message.into(),
        }
    }

    /// Replaces every appearance of a secret in the field and message with [`SECRET_MASK`]:
    /// as it is, and as `{:?}` and JSON quote it (without the quotes). A secret shorter than
    /// [`SHORT_SECRET`] characters is masked only where it stands alone (not inside a word),
    /// so that a one-letter secret does not mask every word of the message. Errors about secret
    /// parameters never format the value; this also covers errors about the rendered document
    /// and the project policy, which show the offending value, when that value came from a
    /// secret.
    pub fn redact(mut self, secrets: &[String]) -> TemplateError {
        let mut forms: Vec<String> = Vec::new();
        for s in secrets.iter().filter(|s| !s.is_empty()) {
            let debug = format!("{s:?}");
            let json = serde_json::Value::String(s.clone()).to_string();
            for form in [
                s.as_str(),
                &debug[1..debug.len() - 1],
                &json[1..json.len() - 1],
            ] {
                if !form.is_empty() && !forms.iter().any(|f| f == form) {
                    forms.push(form.to_string());
                }
            }
        }
        // Longest first, so a secret containing another is masked whole.
        forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
        for form in &forms {
            self.message = mask(&self.message, form);
            self.field = mask(&self.field, form);
        }
        self
    }

    /// The message cut to [`MESSAGE_MAX_CHARS`] (messages that quote an offending value whole,
    /// such as a list of a thousand items, stay readable). Done after [`TemplateError::redact`]
    /// so that a secret is never cut in half and left unmasked.
    fn shortened(mut self) -> TemplateError {
        if let Some((at, _)) = self.message.char_indices().nth(MESSAGE_MAX_CHARS) {
            self.message.truncate(at);
            self.message.push('…');
        }
        self
    }

    /// Fills in the application and profile where they are not set yet.
    pub fn in_app(mut self, app: &Application, profile: &str) -> TemplateError {
        if self.application.is_empty() {
            self.application = format!("{}:{}", app.name, app.version);
        }
        if self.profile.is_empty() {
            self.profile = profile.to_string();
        }
        self
    }
}

/// Longest error message (characters), see [`TemplateError::shortened`].
const MESSAGE_MAX_CHARS: usize = 1000;

/// Secrets shorter than this (in characters) are masked only where they stand alone.
const SHORT_SECRET: usize = 4;

/// `text` with `secret` replaced by [`SECRET_MASK`] (see [`TemplateError::redact`]).
fn mask(text: &str, secret: &str) -> String {
    if !text.contains(secret) {
        return text.to_string();
    }
    if secret.chars().count() >= SHORT_SECRET {
        return text.replace(secret, SECRET_MASK);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut before: Option<char> = None;
    while let Some(at) = rest.find(secret) {
        let prev = rest[..at].chars().next_back().or(before);
        let next = rest[at + secret.len()..].chars().next();
        let alone =
            !prev.is_some_and(char::is_alphanumeric) && !next.is_some_and(char::is_alphanumeric);
        out.push_str(&rest[..at]);
        out.push_str(if alone { SECRET_MASK } else { secret });
        before = secret.chars().next_back();
        rest = &rest[at + secret.len()..];
    }
    out.push_str(rest);
    out
}

/// Who a template is rendered for: the deployment and where it runs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RenderContext {
    /// The deployment's id (`deployment.id`).
    pub deployment_id: String,
    /// The deployment's name (`deployment.name`).
    pub deployment_name: String,
    /// The app's namespace in the deployment (`app.namespace`).
    pub namespace: String,
    /// The project's name (`project`).
    pub project: String,
    /// `rootUrl` of the app's image registry, when it has one: images without a registry host
    /// are prefixed with its host and path.
    pub image_registry_url: Option<String>,
    /// The project's policy, when the rendering is for edges: containers without limits get
    /// its defaults, and every image, host port, limit and VM file must be allowed by it.
    pub policy: Option<ProjectPolicy>,
}

/// Checks a native application's template at upload (or create/update): its syntax, and, for
/// each profile (or once without values when it has none), that rendering with the profile's
/// values gives a valid workload. Mandatory parameters have no values yet, so the profile's own
/// value or a placeholder stands in (`placeholder`, 30000 + their index for numbers, `false`);
/// a VM's `url`, `sha256`, `cpus`, `memory` or `sizeGib` that is exactly such a placeholder is
/// accepted (it is checked at deploy, with the real value). The context is `deployment.id` =
/// the nil UUID, `deployment.name` = `app.namespace` = the app name, `project` = `default`;
/// when the app names an image registry, registry paths of VM files resolve against a
/// stand-in (the registry itself is looked up at deploy).
pub fn check_template(app: &Application) -> Result<(), TemplateError> {
    if app.workload_template.is_empty() {
        return Ok(());
    }
    let first = app.profiles.first().map(|p| p.name.as_str()).unwrap_or("");
    if app.workload_template.len() > TEMPLATE_MAX_BYTES {
        return Err(TemplateError::new(
            TEMPLATE_NAME,
            format!("must be at most {TEMPLATE_MAX_BYTES} bytes"),
        )
        .in_app(app, first));
    }
    on_big_stack(|| {
        // Syntax first, once, so a syntax error is reported as such (named with the first
        // profile, the one that would have been rendered first).
        compile_check(&app.workload_template).map_err(|e| e.in_app(app, first))?;
        let ctx = RenderContext {
            deployment_id: "00000000-0000-0000-0000-000000000000".into(),
            deployment_name: app.name.clone(),
            namespace: app.name.clone(),
            project: "default".into(),
            image_registry_url: (!app.image_registry_name.is_empty())
                .then(|| UPLOAD_REGISTRY_STAND_IN.to_string()),
            policy: None,
        };
        let profiles: Vec<Option<&Profile>> = if app.profiles.is_empty() {
            vec![None]
        } else {
            app.profiles.iter().map(Some).collect()
        };
        for p in profiles {
            let name = p.map(|p| p.name.as_str()).unwrap_or("");
            let (overrides, placeholders) =
                values::check_overrides(p).map_err(|e| e.in_app(app, name))?;
            render_inner(app, p, &overrides, &ctx, &placeholders)
                .map_err(|e| e.in_app(app, name).shortened())?;
        }
        Ok(())
    })
}

/// Renders a native application's template for a deployment: `profile` (empty = the app's
/// default profile) values merged with `overrides` (the deployment's override values for this
/// app; `null` = none), with the profile's parameter templates applied. `overrides` must hold
/// the real secret values (see [`unmask_secrets`]); a secret still masked is refused.
/// Returns the app's containers and VMs (at least one of either).
pub fn render(
    app: &Application,
    profile: &str,
    overrides: &Value,
    ctx: &RenderContext,
) -> Result<Workloads, TemplateError> {
    let (p, profile_name) = select_profile(app, profile)?;
    on_big_stack(|| {
        render_inner(app, p, overrides, ctx, &[]).map_err(|e| {
            e.in_app(app, profile_name)
                .redact(&secrets_of(p, overrides))
                .shortened()
        })
    })
}

/// The secret parameters' values given to a rendering (override and profile values); only
/// looked up when there is an error to mask them in.
fn secrets_of(profile: Option<&Profile>, overrides: &Value) -> Vec<String> {
    let templates = profile.map_or(&[][..], |p| &p.parameter_templates[..]);
    let base = values::profile_values(profile).unwrap_or(Value::Null);
    values::secret_texts(templates, &[overrides, &base])
}

/// Like [`render`], but returns the rendered document as YAML text, before it is checked (the
/// values in it as data): for previews and for checking documents against [`SCHEMA_JSON`].
pub fn render_to_text(
    app: &Application,
    profile: &str,
    overrides: &Value,
    ctx: &RenderContext,
) -> Result<String, TemplateError> {
    let (p, profile_name) = select_profile(app, profile)?;
    on_big_stack(|| {
        let doc = render_document(app, p, overrides, ctx).map_err(|e| {
            e.in_app(app, profile_name)
                .redact(&secrets_of(p, overrides))
                .shortened()
        })?;
        serde_saphyr::to_string(&doc).map_err(|e| {
            TemplateError::new(
                TEMPLATE_NAME,
                format!("cannot write the document as YAML: {e}"),
            )
            .in_app(app, profile_name)
        })
    })
}

/// The profile to render with (`""` = the default one; none when the app has no profiles),
/// and its name.
fn select_profile<'a>(
    app: &'a Application,
    profile: &'a str,
) -> Result<(Option<&'a Profile>, &'a str), TemplateError> {
    let profile_name = if profile.is_empty() {
        app.default_profile_name.as_str()
    } else {
        profile
    };
    if app.workload_template.is_empty() {
        return Err(TemplateError::new(
            TEMPLATE_NAME,
            "the application has no workload template (it is a Helm chart application)",
        )
        .in_app(app, profile_name));
    }
    let p = if profile_name.is_empty() && app.profiles.is_empty() {
        None
    } else {
        Some(app.profile(profile_name).ok_or_else(|| {
            TemplateError::new(
                "profile",
                format!("the application has no profile {profile_name:?}"),
            )
            .in_app(app, profile_name)
        })?)
    };
    if app.workload_template.len() > TEMPLATE_MAX_BYTES {
        return Err(TemplateError::new(
            TEMPLATE_NAME,
            format!("must be at most {TEMPLATE_MAX_BYTES} bytes"),
        )
        .in_app(app, profile_name));
    }
    Ok((p, profile_name))
}

fn render_inner(
    app: &Application,
    profile: Option<&Profile>,
    overrides: &Value,
    ctx: &RenderContext,
    placeholders: &[Value],
) -> Result<Workloads, TemplateError> {
    let doc = render_document(app, profile, overrides, ctx)?;
    let mut workloads = format::workloads_from_value(
        doc,
        format::ReadOptions {
            image_registry_url: ctx.image_registry_url.as_deref(),
            placeholders,
        },
    )?;
    if let Some(policy) = &ctx.policy {
        policy.enforce(&mut workloads, ctx.image_registry_url.as_deref())?;
    }
    Ok(workloads)
}

/// Values (parameters applied, merged, defaults filled) → context → rendered document, the
/// values in it as data (see [`data`]).
fn render_document(
    app: &Application,
    profile: Option<&Profile>,
    overrides: &Value,
    ctx: &RenderContext,
) -> Result<Value, TemplateError> {
    let templates = profile.map_or(&[][..], |p| &p.parameter_templates[..]);
    let base = values::profile_values(profile)?;
    let mut overrides = overrides.clone();
    if !overrides.is_null() && !overrides.is_object() {
        return Err(TemplateError::new(
            "overrides",
            "override values must be a mapping",
        ));
    }
    apply_parameter_templates(templates, &mut overrides)?;
    let mut merged = merge_values(&base, &overrides);
    values::fill_defaults(templates, &mut merged)?;
    values::refuse_masked(templates, &merged)?;

    let mut root: BTreeMap<String, minijinja::Value> = BTreeMap::new();
    root.insert("values".into(), to_template_value(&merged));
    root.insert(
        "deployment".into(),
        object([
            ("id", ctx.deployment_id.as_str()),
            ("name", ctx.deployment_name.as_str()),
        ]),
    );
    root.insert(
        "app".into(),
        object([
            ("name", app.name.as_str()),
            ("version", app.version.as_str()),
            ("namespace", ctx.namespace.as_str()),
        ]),
    );
    root.insert(
        "profile".into(),
        minijinja::Value::from(profile.map_or("", |p| p.name.as_str())),
    );
    root.insert(
        "project".into(),
        minijinja::Value::from(ctx.project.as_str()),
    );

    let (text, printer) = run_engine(&app.workload_template, minijinja::Value::from(root))?;
    data::read_document(&text, &printer)
}

fn object<const N: usize>(fields: [(&str, &str); N]) -> minijinja::Value {
    minijinja::Value::from(
        fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), minijinja::Value::from(v)))
            .collect::<BTreeMap<String, minijinja::Value>>(),
    )
}

/// The engine: strict undefined, no auto-escaping, no loader (so `include`, `import` and
/// `extends` find nothing), bounded work, and block tags that do not leave blank lines. What
/// `{{ }}` prints goes to `printer`, which puts a token in the text instead (see [`data`]).
fn environment(printer: Arc<Mutex<data::Printer>>) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_debug(true);
    env.set_fuel(Some(RENDER_FUEL));
    env.add_filter("tojson", data::tojson);
    env.set_formatter(move |out, state, value| {
        // Printing a collection visits all of it before any fuel is charged: bound it (a
        // lazily repeated list can claim a hundred million items).
        if matches!(
            value.kind(),
            ValueKind::Seq | ValueKind::Map | ValueKind::Iterable
        ) && value.len().is_none_or(|n| n > MAX_PRINTED_ITEMS)
        {
            return Err(minijinja::Error::new(
                ErrorKind::InvalidOperation,
                format!("cannot print a collection of more than {MAX_PRINTED_ITEMS} items"),
            ));
        }
        let token = printer
            .lock()
            .map_err(|_| minijinja::Error::new(ErrorKind::InvalidOperation, "printer poisoned"))?
            .print(state, value)?;
        out.write_str(&token)?;
        Ok(())
    });
    if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .build()
    {
        env.set_syntax(syntax);
    }
    env
}

fn compile_check(source: &str) -> Result<(), TemplateError> {
    let env = environment(Arc::new(Mutex::new(data::Printer::new())));
    env.template_from_named_str(TEMPLATE_NAME, source)
        .map(|_| ())
        .map_err(|e| TemplateError::new(TEMPLATE_NAME, describe(&e, source)))
}

/// Renders `source`: the text (tokens where values were printed) and the values printed.
fn run_engine(
    source: &str,
    ctx: minijinja::Value,
) -> Result<(String, data::Printer), TemplateError> {
    let printer = Arc::new(Mutex::new(data::Printer::new()));
    let text = {
        let env = environment(Arc::clone(&printer));
        let tmpl = env
            .template_from_named_str(TEMPLATE_NAME, source)
            .map_err(|e| TemplateError::new(TEMPLATE_NAME, describe(&e, source)))?;
        tmpl.render(ctx)
            .map_err(|e| TemplateError::new(TEMPLATE_NAME, describe(&e, source)))?
    };
    let printer = Arc::try_unwrap(printer)
        .ok()
        .and_then(|m| m.into_inner().ok())
        .ok_or_else(|| TemplateError::new(TEMPLATE_NAME, "internal error: printer still shared"))?;
    Ok((text, printer))
}

/// A minijinja error as one line: what, the failing expression where known, and the line.
fn describe(e: &minijinja::Error, source: &str) -> String {
    let mut msg = match e.kind() {
        ErrorKind::SyntaxError => "syntax error".to_string(),
        ErrorKind::OutOfFuel => format!(
            "rendering does too much work (more than {RENDER_FUEL} steps); simplify the template"
        ),
        ErrorKind::TemplateNotFound => {
            "templates cannot include, import or extend other templates".to_string()
        }
        k => k.to_string(),
    };
    if let Some(detail) = e.detail() {
        msg.push_str(": ");
        msg.push_str(detail);
    }
    // The failing expression, where it says more than the detail (an undefined value's
    // detail already names it).
    let named = e.kind() == ErrorKind::UndefinedError && e.detail().is_some();
    if !named
        && !matches!(e.kind(), ErrorKind::SyntaxError | ErrorKind::OutOfFuel)
        && let Some(range) = e.range()
        && let Some(expr) = source.get(range)
    {
        let expr: String = expr.chars().take(120).collect();
        msg.push_str(&format!(" in `{}`", expr.trim()));
    }
    if let Some(line) = e.line() {
        msg.push_str(&format!(" (line {line})"));
    }
    msg
}

/// The template engine's value for a JSON value.
fn to_template_value(v: &Value) -> minijinja::Value {
    match v {
        Value::Null => minijinja::Value::from(()),
        Value::Bool(b) => minijinja::Value::from(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                minijinja::Value::from(i)
            } else if let Some(u) = n.as_u64() {
                minijinja::Value::from(u)
            } else {
                minijinja::Value::from(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Value::String(s) => minijinja::Value::from(s.as_str()),
        Value::Array(items) => {
            minijinja::Value::from(items.iter().map(to_template_value).collect::<Vec<_>>())
        }
        Value::Object(map) => minijinja::Value::from(
            map.iter()
                .map(|(k, v)| (k.clone(), to_template_value(v)))
                .collect::<BTreeMap<String, minijinja::Value>>(),
        ),
    }
}

/// Stack for rendering and reading the output: minijinja recurses (up to its recursion limit)
/// and deserializing a deeply nested document takes more stack than a caller's thread (an
/// async runtime worker: 2 MiB) can be assumed to have left. Reserved, not committed.
const RENDER_STACK_BYTES: usize = 32 * 1024 * 1024;

fn on_big_stack<T: Send>(f: impl Fn() -> T + Sync) -> T {
    std::thread::scope(|scope| {
        let worker = std::thread::Builder::new()
            .name("canopy-template".into())
            .stack_size(RENDER_STACK_BYTES)
            .spawn_scoped(scope, &f);
        match worker {
            Ok(handle) => handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            // No thread to be had: run here, on the caller's stack.
            Err(_) => f(),
        }
    })
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod vm_tests;
