//! The core layer's one error type: a rule that an input breaks, naming the resource and field.

use std::fmt;

/// Resource types as the reference names them in error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceType {
    Registry,
    Application,
    Profile,
    ParameterTemplate,
    DeploymentPackage,
    DeploymentProfile,
    ApplicationReference,
    Artifact,
    UploadSession,
    Project,
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ResourceType::Registry => "registry",
            ResourceType::Application => "application",
            ResourceType::Profile => "profile",
            ResourceType::ParameterTemplate => "parameter-template",
            ResourceType::DeploymentPackage => "deployment-package",
            ResourceType::DeploymentProfile => "deployment-profile",
            ResourceType::ApplicationReference => "application-reference",
            ResourceType::Artifact => "artifact",
            ResourceType::UploadSession => "upload-session",
            ResourceType::Project => "project",
        })
    }
}

/// An input that breaks a rule. Displayed the reference's way: `<resource> <key> <message>`,
/// e.g. `application web:0.1.0 profiles[1].name: "Bad" contains 'B'; ...`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct Invalid {
    pub resource: ResourceType,
    /// `name` or `name:version` of the resource, as far as it is known.
    pub key: String,
    pub message: String,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{} {}", self.resource, self.message)
        } else {
            write!(f, "{} {} {}", self.resource, self.key, self.message)
        }
    }
}

impl Invalid {
    /// Builds an error about `field` of the resource `resource key`.
    pub fn field(
        resource: ResourceType,
        key: impl Into<String>,
        field: &str,
        msg: impl fmt::Display,
    ) -> Invalid {
        Invalid {
            resource,
            key: key.into(),
            message: format!("{field}: {msg}"),
        }
    }

    /// Builds an error with a free-form message.
    pub fn new(resource: ResourceType, key: impl Into<String>, msg: impl Into<String>) -> Invalid {
        Invalid {
            resource,
            key: key.into(),
            message: msg.into(),
        }
    }
}
