//! Findings: what `ferry validate` reports, each pointing at a file, line,
//! column and field, with a hint saying what to do.
use std::fmt;

use serde::{Deserialize, Serialize};

/// How bad a finding is. Errors fail validation; warnings do not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Blocks merging: Ferry would refuse or misbehave on this commit.
    Error,
    /// Probably a mistake, but Ferry can act on the commit.
    Warning,
}

/// Stable identifiers of finding kinds, so CI bots can match on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Code {
    /// The file is not valid YAML.
    YamlSyntax,
    /// A field Ferry does not know (usually a typo).
    UnknownField,
    /// A required field is missing.
    MissingField,
    /// A value has the wrong type or is not one of the allowed values.
    InvalidValue,
    /// `apiVersion`/`kind` missing, unknown, or not matching the directory.
    WrongKind,
    /// A name that is not a DNS-1123 label.
    InvalidName,
    /// A label key or value Kubernetes would reject.
    InvalidLabel,
    /// A duration that humantime cannot parse.
    InvalidDuration,
    /// The same namespace is placed by two documents.
    DuplicatePlacement,
    /// The same cluster is defined by two documents.
    DuplicateCluster,
    /// A placement names a cluster that no `clusters/` file defines.
    UnknownCluster,
    /// A minijinja template failed to parse or render.
    Template,
    /// A patch that matches no object.
    PatchMatchesNothing,
    /// A patch that is malformed or fails to apply.
    InvalidPatch,
    /// An object using an API version current Kubernetes no longer serves.
    RemovedApiVersion,
    /// A file referenced from an overlay does not exist.
    MissingFile,
    /// An overlay directory for a namespace that is not placed.
    OrphanOverlay,
    /// A file Ferry does not read, in a directory it owns.
    IgnoredFile,
}

impl Code {
    /// The kebab-case name used in output.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::YamlSyntax => "yaml-syntax",
            Code::UnknownField => "unknown-field",
            Code::MissingField => "missing-field",
            Code::InvalidValue => "invalid-value",
            Code::WrongKind => "wrong-kind",
            Code::InvalidName => "invalid-name",
            Code::InvalidLabel => "invalid-label",
            Code::InvalidDuration => "invalid-duration",
            Code::DuplicatePlacement => "duplicate-placement",
            Code::DuplicateCluster => "duplicate-cluster",
            Code::UnknownCluster => "unknown-cluster",
            Code::Template => "template",
            Code::PatchMatchesNothing => "patch-matches-nothing",
            Code::InvalidPatch => "invalid-patch",
            Code::RemovedApiVersion => "removed-api-version",
            Code::MissingFile => "missing-file",
            Code::OrphanOverlay => "orphan-overlay",
            Code::IgnoredFile => "ignored-file",
        }
    }
}

/// One problem found in a placement repository.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Error or warning.
    pub severity: Severity,
    /// Machine-readable kind.
    pub code: Code,
    /// Repo-relative path of the file.
    pub file: String,
    /// 1-based line; 0 when the finding concerns the whole file.
    pub line: u64,
    /// 1-based column; 0 when unknown.
    pub column: u64,
    /// Dotted path of the field, e.g. `spec.hooks.beforeQuiesce[0].command`; empty for the whole document.
    pub field: String,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub hint: String,
}

/// A position in a repository file, carried until a finding is made.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pos {
    /// Repo-relative path.
    pub file: String,
    /// 1-based line (0 = unknown).
    pub line: u64,
    /// 1-based column (0 = unknown).
    pub column: u64,
}

impl Pos {
    /// A position at the start of `file`.
    pub fn file(file: &str) -> Self {
        Pos { file: file.to_string(), line: 0, column: 0 }
    }

    /// An error finding at this position.
    pub fn error(&self, code: Code, field: impl Into<String>, message: impl Into<String>, hint: impl Into<String>) -> Finding {
        self.finding(Severity::Error, code, field, message, hint)
    }

    /// A warning finding at this position.
    pub fn warning(&self, code: Code, field: impl Into<String>, message: impl Into<String>, hint: impl Into<String>) -> Finding {
        self.finding(Severity::Warning, code, field, message, hint)
    }

    fn finding(&self, severity: Severity, code: Code, field: impl Into<String>, message: impl Into<String>, hint: impl Into<String>) -> Finding {
        Finding {
            severity,
            code,
            file: self.file.clone(),
            line: self.line,
            column: self.column,
            field: field.into(),
            message: message.into(),
            hint: hint.into(),
        }
    }
}

impl fmt::Display for Finding {
    /// `file:line:col: error[code] field: message` then an indented hint, like
    /// compilers print, so editors can jump to the location.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{}:{}:{}: {sev}[{}]", self.file, self.line, self.column, self.code.as_str())?;
        if !self.field.is_empty() {
            write!(f, " {}:", self.field)?;
        }
        write!(f, " {}", self.message)?;
        if !self.hint.is_empty() {
            write!(f, "\n    hint: {}", self.hint)?;
        }
        Ok(())
    }
}

/// The outcome of validating a repository.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Report {
    /// Number of error findings.
    pub errors: usize,
    /// Number of warning findings.
    pub warnings: usize,
    /// Every finding, sorted by file and position.
    pub findings: Vec<Finding>,
}

impl Report {
    /// Sort findings and count them.
    pub fn new(mut findings: Vec<Finding>) -> Self {
        findings.sort_by(|a, b| (&a.file, a.line, a.column, &a.field).cmp(&(&b.file, b.line, b.column, &b.field)));
        findings.dedup();
        let errors = findings.iter().filter(|f| f.severity == Severity::Error).count();
        Report { errors, warnings: findings.len() - errors, findings }
    }

    /// True when there is no error (warnings allowed).
    pub fn ok(&self) -> bool {
        self.errors == 0
    }
}
