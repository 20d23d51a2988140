//! YAML parsing that keeps positions: multi-document splitting with line
//! offsets, typed parsing that names the failing field, and conversion of
//! serde-saphyr errors into findings.
use serde::de::DeserializeOwned;
use serde_saphyr::{Location, Spanned};

use super::finding::{Code, Finding, Pos};

/// One YAML document of a file, with where it starts.
#[derive(Clone, Debug)]
pub struct Doc<'a> {
    /// Repo-relative path of the file.
    pub file: &'a str,
    /// The document's text (without the `---` separator line).
    pub text: &'a str,
    /// Lines before the document in its file; added to every reported line.
    pub line_offset: u64,
}

impl Doc<'_> {
    /// Position of a span-carrying value inside this document.
    pub fn pos(&self, loc: &Location) -> Pos {
        if loc.line() == 0 {
            return Pos { file: self.file.to_string(), line: self.line_offset + 1, column: 1 };
        }
        Pos { file: self.file.to_string(), line: loc.line() + self.line_offset, column: loc.column() }
    }

    /// Position of a spanned value.
    pub fn at<T>(&self, s: &Spanned<T>) -> Pos {
        self.pos(&s.referenced)
    }

    /// Position of the document's first line.
    pub fn start(&self) -> Pos {
        Pos { file: self.file.to_string(), line: self.line_offset + 1, column: 1 }
    }
}

/// Split a file into its YAML documents, skipping empty ones (only comments
/// or blank lines), so a trailing `---` is harmless.
pub fn split_documents<'a>(file: &'a str, text: &'a str) -> Vec<Doc<'a>> {
    let mut docs = Vec::new();
    let mut start = 0usize; // byte offset of the current document
    let mut start_line = 0u64; // lines before it
    let mut offset = 0usize;
    let push = |from: usize, to: usize, lines_before: u64, docs: &mut Vec<Doc<'a>>| {
        let body = &text[from..to];
        let meaningful = body.lines().any(|l| {
            let t = l.trim();
            !t.is_empty() && !t.starts_with('#')
        });
        if meaningful {
            docs.push(Doc { file, text: body, line_offset: lines_before });
        }
    };
    for (line_no, line) in (0u64..).zip(text.split_inclusive('\n')) {
        let bare = line.trim_end_matches(['\n', '\r']);
        let is_sep = bare == "---" || bare.starts_with("--- ") || bare == "...";
        if is_sep {
            push(start, offset, start_line, &mut docs);
            start = offset + line.len();
            start_line = line_no + 1;
        }
        offset += line.len();
    }
    push(start, text.len(), start_line, &mut docs);
    docs
}

/// Parse a document into `T`; on failure return one finding naming the
/// field path, the position and what to do.
pub fn parse<T: DeserializeOwned>(doc: &Doc<'_>) -> Result<T, Finding> {
    let mut path = String::new();
    let result = serde_saphyr::with_deserializer_from_str(doc.text, |de| {
        serde_path_to_error::deserialize(de).map_err(|e| {
            path = e.path().to_string();
            e.into_inner()
        })
    });
    let typed_err = match result {
        Ok(t) => return Ok(t),
        Err(e) => e,
    };
    // A typed parse of broken YAML reports confusing type errors: check syntax alone.
    if let Err(err) = serde_saphyr::from_str::<serde::de::IgnoredAny>(doc.text) {
        let (line, column) = location(&err);
        let pos = Pos { file: doc.file.to_string(), line: line + doc.line_offset, column };
        let message = bare_message(&err);
        if let Some(rest) = message.strip_prefix("duplicate mapping key: ") {
            let key = rest.split(',').next().unwrap_or(rest).trim();
            return Err(pos.error(
                Code::YamlSyntax,
                "",
                format!("duplicate key `{key}`"),
                format!("a key may appear once per mapping: remove one of the `{key}` entries"),
            ));
        }
        return Err(pos.error(
            Code::YamlSyntax,
            "",
            format!("YAML syntax error: {message}"),
            "fix the YAML syntax at this position (indentation, unclosed brackets or quotes, tabs)",
        ));
    }
    let (mut line, mut column) = location(&typed_err);
    let message = bare_message(&typed_err);
    // serde reports a missing field where the mapping ends; the mapping's own
    // key is where a person looks for it.
    if message.starts_with("missing field")
        && path != "."
        && let Some(at) = key_position(doc.text, &path)
    {
        (line, column) = at;
    }
    let pos = Pos { file: doc.file.to_string(), line: line + doc.line_offset, column };
    Err(typed_error(pos, &path, &message))
}

/// Line and column (1-based) of the key (or sequence item) at `path`
/// (`spec.hooks.beforeQuiesce[0]`, as serde_path_to_error prints paths).
pub fn key_position(text: &str, path: &str) -> Option<(u64, u64)> {
    use serde_saphyr::granit_parser::{Event, Parser};
    enum Frame {
        Map { path: String, key: Option<String> },
        Seq { path: String, index: usize },
    }
    let join = |base: &str, key: &str| if base.is_empty() { key.to_string() } else { format!("{base}.{key}") };
    let mut stack: Vec<Frame> = Vec::new();
    for ev in Parser::new_from_str(text) {
        let (event, span) = ev.ok()?;
        let at = (span.start.line() as u64, span.start.col() as u64 + 1);
        // Path of the node this event starts, if it is a node; keys are handled in place.
        let node_path = match &event {
            Event::Scalar(..) | Event::MappingStart(..) | Event::SequenceStart(..) | Event::Alias(..) => match stack.last_mut() {
                None => Some(String::new()),
                Some(Frame::Map { path: base, key }) => match key {
                    None => {
                        let k = if let Event::Scalar(v, ..) = &event { v.to_string() } else { "?".into() };
                        if join(base, &k) == path {
                            return Some(at);
                        }
                        *key = Some(k);
                        if matches!(event, Event::Scalar(..)) {
                            continue;
                        }
                        None
                    }
                    Some(k) => Some(join(base, k)),
                },
                Some(Frame::Seq { path: base, index }) => {
                    let p = format!("{base}[{index}]");
                    if p == path {
                        return Some(at);
                    }
                    Some(p)
                }
            },
            _ => None,
        };
        match event {
            Event::MappingStart(..) => stack.push(Frame::Map { path: node_path.unwrap_or_default(), key: None }),
            Event::SequenceStart(..) => stack.push(Frame::Seq { path: node_path.unwrap_or_default(), index: 0 }),
            Event::MappingEnd | Event::SequenceEnd => {
                stack.pop();
                complete(&mut stack);
            }
            Event::Scalar(..) | Event::Alias(..) => complete(&mut stack),
            _ => {}
        }
    }
    fn complete(stack: &mut [Frame]) {
        match stack.last_mut() {
            Some(Frame::Map { key, .. }) => *key = None,
            Some(Frame::Seq { index, .. }) => *index += 1,
            None => {}
        }
    }
    None
}

fn location(err: &serde_saphyr::Error) -> (u64, u64) {
    err.location().map(|l| (l.line(), l.column())).unwrap_or((0, 0))
}

/// The error text without the snippet and the trailing " at line L, column C"
/// (the finding carries the position itself).
fn bare_message(err: &serde_saphyr::Error) -> String {
    let text = err.without_snippet().to_string();
    match text.rfind(" at line ") {
        Some(i) if text[i..].contains(", column ") => text[..i].to_string(),
        _ => text,
    }
}

/// Classify a typed-deserialization error into a finding with a useful hint.
fn typed_error(pos: Pos, path: &str, message: &str) -> Finding {
    let path = if path == "." { "" } else { path };
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (name, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let expected = expected.trim_start_matches(',').trim();
        let allowed = expected.strip_prefix("expected one of ").or_else(|| expected.strip_prefix("expected ")).unwrap_or(expected);
        let hint = if allowed.is_empty() || allowed == "there are no fields" {
            format!("remove `{name}`: this object takes no fields")
        } else {
            format!("remove `{name}` or correct its spelling; allowed fields here: {allowed}")
        };
        return pos.error(Code::UnknownField, path, format!("unknown field `{name}`"), hint);
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        let name = rest.split('`').next().unwrap_or(rest);
        let field = if path.is_empty() { name.to_string() } else { format!("{path}.{name}") };
        return pos.error(Code::MissingField, field, format!("missing required field `{name}`"), format!("add `{name}` to this object"));
    }
    if let Some(rest) = message.strip_prefix("unknown variant `") {
        let (name, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let allowed = expected.trim_start_matches(',').trim().trim_start_matches("expected one of ").trim_start_matches("expected ");
        return pos.error(Code::InvalidValue, path, format!("`{name}` is not an allowed value"), format!("use one of: {allowed}"));
    }
    pos.error(Code::InvalidValue, path, format!("invalid value: {message}"), "give this field a value of the documented type (see examples/placement-repo/README.md)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct T {
        name: Spanned<String>,
        #[serde(default)]
        items: Vec<Item>,
    }
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Item {
        id: u32,
    }

    #[test]
    fn split_keeps_line_offsets_and_skips_empty_documents() {
        let text = "# header\n---\na: 1\n---\n# only a comment\n---\nb: 2\nc: 3\n---\n";
        let docs = split_documents("f.yaml", text);
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].line_offset, 2);
        assert_eq!(docs[0].text, "a: 1\n");
        assert_eq!(docs[1].line_offset, 6);
        assert_eq!(docs[1].text, "b: 2\nc: 3\n");
    }

    #[test]
    fn unknown_field_names_path_and_position_in_second_document() {
        let text = "name: a\n---\nname: b\nitems:\n  - id: 1\n    idd: 2\n";
        let docs = split_documents("f.yaml", text);
        let err = parse::<T>(&docs[1]).unwrap_err();
        assert_eq!(err.code, Code::UnknownField);
        assert_eq!(err.field, "items[0].idd");
        assert_eq!((err.line, err.column), (6, 5));
        assert_eq!(err.message, "unknown field `idd`");
        assert!(err.hint.contains("allowed fields here: id"), "{}", err.hint);
    }

    #[test]
    fn spans_are_shifted_by_the_document_offset() {
        let text = "name: a\n---\n\nname: bee\n";
        let docs = split_documents("f.yaml", text);
        let t: T = parse(&docs[1]).unwrap();
        let pos = docs[1].at(&t.name);
        assert_eq!((pos.line, pos.column), (4, 7));
    }

    #[test]
    fn syntax_error_is_reported_as_such() {
        let docs = split_documents("f.yaml", "name: a\nitems: [\n  - id: 1\n");
        let err = parse::<T>(&docs[0]).unwrap_err();
        assert_eq!(err.code, Code::YamlSyntax);
        assert!(err.message.starts_with("YAML syntax error"), "{}", err.message);
        assert!(err.line >= 2, "{err}");
    }

    #[test]
    fn key_positions() {
        let text = "a: 1\nspec:\n  hooks:\n    - name: x\n      sel: {k: v}\n    - name: y\n  other: [1, 2]\n";
        assert_eq!(key_position(text, "spec"), Some((2, 1)));
        assert_eq!(key_position(text, "spec.hooks"), Some((3, 3)));
        assert_eq!(key_position(text, "spec.hooks[1]"), Some((6, 7)));
        assert_eq!(key_position(text, "spec.hooks[0].sel.k"), Some((5, 13)));
        assert_eq!(key_position(text, "spec.other"), Some((7, 3)));
        assert_eq!(key_position(text, "spec.nothing"), None);
    }

    #[test]
    fn missing_field_points_at_the_parent_key() {
        let docs = split_documents("f.yaml", "name: a\nitems:\n  - id: 1\n  - {}\n");
        let err = parse::<T>(&docs[0]).unwrap_err();
        assert_eq!(err.code, Code::MissingField);
        assert_eq!(err.field, "items[1].id");
        assert_eq!((err.line, err.column), (4, 5));
    }

    #[test]
    fn duplicate_key_is_named() {
        let docs = split_documents("f.yaml", "name: a\nname: b\n");
        let err = parse::<T>(&docs[0]).unwrap_err();
        assert_eq!(err.message, "duplicate key `name`");
        assert_eq!(err.line, 2);
    }

    #[test]
    fn wrong_type_names_the_field() {
        let docs = split_documents("f.yaml", "name: a\nitems:\n  - id: many\n");
        let err = parse::<T>(&docs[0]).unwrap_err();
        assert_eq!(err.code, Code::InvalidValue);
        assert_eq!(err.field, "items[0].id");
        assert_eq!((err.line, err.column), (3, 9));
    }
}
