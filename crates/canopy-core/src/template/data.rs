//! Values are data: whatever a template author writes around `{{ }}`, what it prints can only
//! ever be one value in the rendered document, never YAML structure.
//!
//! Pasting values into YAML text cannot be made safe by escaping: the right escaping depends on
//! where the value lands (a plain scalar, inside `"..."` or `'...'`, a block scalar, a key, a
//! flow sequence), and the engine does not know. So nothing a template prints reaches the YAML
//! text at all:
//!
//! 1. the engine's formatter replaces every printed value with a **token** (private-use
//!    characters around a per-rendering random nonce and an index) and keeps the value aside
//!    ([`Printer`]);
//! 2. the rendered text — the author's text and tokens only — is parsed as YAML, so its
//!    structure is the template's alone;
//! 3. the tokens in the parsed scalars are replaced by the values ([`read_document`]). A scalar
//!    that is exactly one token and was written plain (`key: {{ v }}`) takes the value itself: a
//!    number, boolean, null, list or mapping stays what it is, the result of `tojson` is the
//!    value it encodes, and a string is typed the way YAML types a plain scalar (`"8080"` is a
//!    number, `"true"` a boolean, `""` null) but is never parsed as anything else. Everywhere
//!    else (quoted, block scalars, text around the token) each token becomes the value's text,
//!    inside the string the author wrote; a key that is exactly one token is the value's text
//!    (`tojson` of a string: that string).
//!
//! Whether a scalar was written plain is read from the characters before its token (a quote:
//! quoted; `: `, `- `, `[`, `,`...: plain). Where they cannot tell — a value alone at the start
//! of a line (a block scalar's content, or a plain scalar continued there) or after a tag — the
//! same text is parsed a second time with each token replaced by a distinct number: a plain
//! scalar then reads as a number, a quoted or block one as a string. Either way only the type of
//! one value depends on it, never the structure. Control flow (`{% if %}`, `{% for %}`) is untouched: it sees the real
//! values. Output captured by a macro, `{% set %}` block or `{% filter %}` block holds the
//! tokens of the values printed in it; printed with `{{ }}`, it is itself one value (its tokens
//! replaced by their text), so a macro cannot emit structure either.

use std::fmt;
use std::sync::Arc;

use minijinja::value::{Kwargs, Object, ObjectRepr, ValueKind};
use minijinja::{Error, ErrorKind, State};
use serde_json::{Map, Value};

use super::{RENDERED_MAX_BYTES, TemplateError};

/// Opens a token (Unicode private use: YAML text, unchanged by case filters, never a number).
const START: char = '\u{E000}';
/// Closes a token.
const END: char = '\u{E001}';
/// Digits of the per-rendering nonce: a value cannot forge a token it would have to guess.
const NONCE_DIGITS: usize = 12;
/// How many bytes of values one rendering may resolve in all, nested captures included (each
/// printed value once, plus what macros and blocks repeat of them).
const RESOLVED_MAX_BYTES: usize = 4 * RENDERED_MAX_BYTES;

/// What one `{{ }}` printed.
#[derive(Debug)]
enum Printed {
    /// A value of the template language and its text as Jinja prints it (booleans and none the
    /// YAML way). A string may hold tokens of earlier prints (macro output, captured blocks).
    Value {
        value: minijinja::Value,
        text: String,
    },
    /// The result of `tojson`: its JSON text (read back when the value itself is needed).
    Json { text: String },
}

impl Printed {
    fn text(&self) -> &str {
        match self {
            Printed::Value { text, .. } | Printed::Json { text, .. } => text,
        }
    }
}

/// The values one rendering printed, in order; a token is `START nonce index END`.
#[derive(Debug)]
pub(crate) struct Printer {
    nonce: String,
    printed: Vec<Printed>,
    bytes: usize,
}

impl Printer {
    pub(crate) fn new() -> Printer {
        let random = uuid::Uuid::new_v4().as_u64_pair().0 % 10u64.pow(NONCE_DIGITS as u32);
        Printer {
            nonce: format!("{random:0width$}", width = NONCE_DIGITS),
            printed: Vec::new(),
            bytes: 0,
        }
    }

    /// Keeps `value` aside and returns the token that stands for it in the text.
    pub(crate) fn print(
        &mut self,
        state: &State,
        value: &minijinja::Value,
    ) -> Result<String, Error> {
        let printed = match value.downcast_object_ref::<Json>() {
            Some(json) => Printed::Json {
                text: json.text.clone(),
            },
            None => Printed::Value {
                value: value.clone(),
                text: match value.kind() {
                    ValueKind::Bool => if value.is_true() { "true" } else { "false" }.to_string(),
                    ValueKind::None => "null".to_string(),
                    ValueKind::Undefined => String::new(),
                    _ => value.to_string(),
                },
            },
        };
        let len = printed.text().len();
        self.bytes = self.bytes.saturating_add(len);
        if self.bytes > RENDERED_MAX_BYTES {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("the values printed add up to more than {RENDERED_MAX_BYTES} bytes"),
            ));
        }
        // Keeping a value costs like writing it out did.
        state.consume_fuel(len as u64 / 64)?;
        self.printed.push(printed);
        Ok(self.token(self.printed.len() - 1))
    }

    fn token(&self, i: usize) -> String {
        format!("{START}{}{i}{END}", self.nonce)
    }

    /// The token at the start of `s`: its index and length in bytes. `Err` when `s` starts with
    /// this rendering's nonce but not with a whole token (a filter cut or changed it).
    fn token_at(&self, s: &str) -> Result<Option<(usize, usize)>, ()> {
        let Some(rest) = s.strip_prefix(START) else {
            return Ok(None);
        };
        let Some(rest) = rest.strip_prefix(self.nonce.as_str()) else {
            return Ok(None);
        };
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || !rest[digits..].starts_with(END) {
            return Err(());
        }
        let index: usize = rest[..digits].parse().map_err(|_| ())?;
        if index >= self.printed.len() {
            return Err(());
        }
        let len = START.len_utf8() + self.nonce.len() + digits + END.len_utf8();
        Ok(Some((index, len)))
    }

    /// The index of the token `s` is, when it is exactly one.
    fn single_token(&self, s: &str) -> Option<usize> {
        match self.token_at(s) {
            Ok(Some((i, len))) if len == s.len() => Some(i),
            _ => None,
        }
    }

    /// `text` with each token replaced by `f(index)` (other text kept).
    fn replace_tokens(
        &self,
        text: &str,
        mut f: impl FnMut(usize, &mut String) -> Result<(), TemplateError>,
    ) -> Result<String, TemplateError> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(at) = rest.find(START) {
            out.push_str(&rest[..at]);
            rest = &rest[at..];
            match self.token_at(rest) {
                Ok(Some((i, len))) => {
                    f(i, &mut out)?;
                    rest = &rest[len..];
                }
                Ok(None) => {
                    out.push(START);
                    rest = &rest[START.len_utf8()..];
                }
                Err(()) => {
                    return Err(TemplateError::new(
                        "workloadTemplate",
                        "a value printed inside a macro or block was cut or changed by a filter \
                         applied to the block (apply filters to values: `{{ v | upper }}`)",
                    ));
                }
            }
        }
        out.push_str(rest);
        Ok(out)
    }

    /// `text` with every token shown as `{{ … }}` (for messages about the rendered text).
    pub(crate) fn describe(&self, text: &str) -> String {
        self.replace_tokens(text, |_, out| {
            out.push_str("{{ … }}");
            Ok(())
        })
        .unwrap_or_else(|_| text.to_string())
    }

    /// How each token of the rendered text is written, by index (tokens not in the text:
    /// [`Style::Unsure`]), and how many bytes of the text are tokens.
    fn styles(&self, text: &str) -> (Vec<Style>, usize) {
        let mut styles = vec![Style::Unsure; self.printed.len()];
        let mut token_bytes = 0;
        let mut at = 0;
        while let Some(found) = text[at..].find(START) {
            let pos = at + found;
            match self.token_at(&text[pos..]) {
                Ok(Some((i, len))) => {
                    styles[i] = style_before(&text[..pos]);
                    token_bytes += len;
                    at = pos + len;
                }
                _ => at = pos + START.len_utf8(),
            }
        }
        (styles, token_bytes)
    }

    /// The rendered text with token `i` replaced by the number `1` followed by `i` in nine
    /// digits: the same YAML structure (a token and a number are both plain characters), but a
    /// plain scalar that is exactly a token now reads as a number.
    fn numbered(&self, text: &str) -> Option<String> {
        self.replace_tokens(text, |i, out| {
            out.push_str(&format!("1{i:09}"));
            Ok(())
        })
        .ok()
    }
}

/// How a token is written in the rendered text, as far as a scalar that is exactly that token
/// goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    Plain,
    Quoted,
    /// At the start of a line or after a tag: ask the numbered text.
    Unsure,
}

/// Whether a scalar value (not a key: a key is text either way) is exactly a token whose
/// style the text does not tell.
fn unsure_value(doc: &Doc, printer: &Printer, styles: &[Style]) -> bool {
    match doc {
        Doc::String(s) => printer
            .single_token(s)
            .is_some_and(|i| styles[i] == Style::Unsure),
        Doc::Seq(items) => items.iter().any(|d| unsure_value(d, printer, styles)),
        Doc::Map(entries) => entries
            .iter()
            .any(|(_, d)| unsure_value(d, printer, styles)),
        _ => false,
    }
}

/// The style of a scalar that is exactly a token written right after `before`.
fn style_before(before: &str) -> Style {
    let trimmed = before.trim_end_matches([' ', '\t']);
    match trimmed.chars().next_back() {
        None => Style::Plain,
        Some('"' | '\'') if trimmed.len() == before.len() => Style::Quoted,
        Some('\n' | '\r') => Style::Unsure,
        Some(_) if trimmed.len() == before.len() => Style::Plain,
        // After spaces: a plain scalar, unless the word before is a tag (`!!str`).
        Some(_) => {
            let word = trimmed
                .rsplit([' ', '\t', '\n', '\r', '[', '{', ','])
                .next()
                .unwrap_or("");
            if word.starts_with('!') {
                Style::Unsure
            } else {
                Style::Plain
            }
        }
    }
}

/// The result of the `tojson` filter: prints as its JSON text, and a plain scalar that is
/// exactly it takes the value it encodes.
#[derive(Debug)]
struct Json {
    text: String,
}

impl Object for Json {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// `tojson`, as Jinja's (the same text, charged the same fuel), remembering the value.
pub(crate) fn tojson(
    state: &State,
    value: minijinja::Value,
    indent: Option<minijinja::Value>,
    kwargs: Kwargs,
) -> Result<minijinja::Value, Error> {
    let encoded = minijinja::filters::tojson(&value, indent, kwargs)?;
    let text = encoded.as_str().unwrap_or_default().to_string();
    state.consume_fuel(text.len() as u64 / 4)?;
    Ok(minijinja::Value::from_object(Json { text }))
}

/// Reads the rendered text (tokens in it) into the document, the values put in as data.
pub(crate) fn read_document(text: &str, printer: &Printer) -> Result<Value, TemplateError> {
    let field = "workloadTemplate";
    let too_long = |n: usize| {
        TemplateError::new(
            field,
            format!("renders to {n} bytes, more than {RENDERED_MAX_BYTES}"),
        )
    };
    // The template's own text and the values put into it count (tokens are longer than most
    // values: the text with them may be longer, within bounds).
    let (styles, token_bytes) = printer.styles(text);
    let own = text.len() - token_bytes;
    if own > RENDERED_MAX_BYTES {
        return Err(too_long(own));
    }
    if text.len() > 4 * RENDERED_MAX_BYTES {
        return Err(too_long(text.len()));
    }
    let mut docs = crate::yaml::parse_documents_as::<Doc>(text).map_err(|e| {
        TemplateError::new(
            field,
            format!("does not render to valid YAML: {}", printer.describe(&e)),
        )
    })?;
    let doc = match docs.len() {
        0 => {
            return Err(TemplateError::new(
                field,
                "renders to an empty document (it must define containers or vms)",
            ));
        }
        1 => docs.remove(0),
        n => {
            return Err(TemplateError::new(
                field,
                format!("renders to {n} YAML documents; it must be one"),
            ));
        }
    };
    // Plain or quoted: the characters before a token tell, except at the start of a line (a
    // block scalar's content, or a plain scalar continued on the next line) and after a tag;
    // then the same text with numbers for tokens is parsed, where a plain scalar reads as a
    // number and a quoted or block one as a string.
    let ambiguous = unsure_value(&doc, printer, &styles);
    let shapes = if ambiguous {
        printer
            .numbered(text)
            .and_then(|t| crate::yaml::parse_documents_as::<Shape>(&t).ok())
    } else {
        None
    };
    let shape = shapes
        .as_ref()
        .and_then(|docs| (docs.len() == 1).then(|| &docs[0]));
    let mut reader = Reader::new(printer, styles)?;
    let value = reader.node(&doc, shape, "")?;
    if own + reader.bytes > RENDERED_MAX_BYTES {
        return Err(too_long(own + reader.bytes));
    }
    Ok(value)
}

/// Puts values into the parsed document.
struct Reader<'p> {
    printer: &'p Printer,
    /// How each token is written in the text (see [`Printer::styles`]).
    styles: Vec<Style>,
    /// Each printed value's text with the tokens of earlier prints in it resolved.
    texts: Vec<String>,
    /// Bytes of values put into the document so far.
    bytes: usize,
}

impl<'p> Reader<'p> {
    fn new(printer: &'p Printer, styles: Vec<Style>) -> Result<Reader<'p>, TemplateError> {
        // In print order, so a token in a printed text (always of an earlier print) is
        // resolved already; a token of a later print cannot be there and is left as text.
        let mut texts: Vec<String> = Vec::with_capacity(printer.printed.len());
        let mut total = 0usize;
        for p in &printer.printed {
            let resolved = printer.replace_tokens(p.text(), |j, out| {
                match texts.get(j) {
                    Some(t) => out.push_str(t),
                    None => out.push_str(&printer.token(j)),
                }
                Ok(())
            })?;
            total = total.saturating_add(resolved.len());
            if total > RESOLVED_MAX_BYTES {
                return Err(too_big());
            }
            texts.push(resolved);
        }
        Ok(Reader {
            printer,
            styles,
            texts,
            bytes: 0,
        })
    }

    fn count(&mut self, n: usize) -> Result<(), TemplateError> {
        self.bytes = self.bytes.saturating_add(n);
        if self.bytes > RENDERED_MAX_BYTES {
            return Err(too_big());
        }
        Ok(())
    }

    /// `text` with each token replaced by its value's text.
    fn text(&mut self, text: &str) -> Result<String, TemplateError> {
        if !text.contains(START) {
            return Ok(text.to_string());
        }
        let texts = &self.texts;
        let mut added = 0usize;
        let out = self.printer.replace_tokens(text, |i, out| {
            out.push_str(&texts[i]);
            added = added.saturating_add(texts[i].len());
            Ok(())
        })?;
        self.count(added)?;
        Ok(out)
    }

    /// The value printed as token `i`, standing alone as a plain scalar.
    fn whole(&mut self, mut i: usize) -> Result<Value, TemplateError> {
        // A captured string that is exactly an earlier token is that value.
        while let Printed::Value { value, text } = &self.printer.printed[i]
            && value.kind() == ValueKind::String
            && let Some(j) = self.printer.single_token(text).filter(|&j| j < i)
        {
            i = j;
        }
        self.count(self.texts[i].len())?;
        let printer = self.printer;
        Ok(match &printer.printed[i] {
            Printed::Json { text } => match serde_json::from_str(text) {
                Ok(value) => self.strings(value)?,
                Err(_) => Value::String(self.texts[i].clone()),
            },
            Printed::Value { value, .. } => match value.kind() {
                ValueKind::Bool => Value::Bool(value.is_true()),
                ValueKind::None | ValueKind::Undefined => Value::Null,
                ValueKind::String => typed(&self.texts[i]),
                // What YAML made of the printed number when it was pasted (`1.0` stays a float).
                ValueKind::Number => typed(&self.texts[i]),
                ValueKind::Seq | ValueKind::Map => match json_of(value) {
                    Some(v) => self.strings(v)?,
                    None => Value::String(self.texts[i].clone()),
                },
                _ => Value::String(self.texts[i].clone()),
            },
        })
    }

    /// Whether the scalar that is exactly token `i` was written plain: as the text before it
    /// tells, else as its counterpart in the numbered text (`shape`) tells (a number: plain);
    /// with neither, plain.
    fn is_plain(&self, i: usize, shape: Option<&Shape>) -> bool {
        match (self.styles[i], shape) {
            (Style::Plain, _) => true,
            (Style::Quoted, _) => false,
            (Style::Unsure, Some(s)) => matches!(s, Shape::Number),
            (Style::Unsure, None) => true,
        }
    }

    /// A mapping key that is exactly the value printed as token `i`: a string as it is (keys
    /// are text: `"1.10"` stays `1.10`), `tojson` of a string that string, anything else its
    /// text.
    fn whole_key(&mut self, i: usize) -> Result<String, TemplateError> {
        match &self.printer.printed[i] {
            Printed::Json { text } if text.starts_with('"') => {
                match serde_json::from_str::<String>(text) {
                    Ok(s) => self.text(&s),
                    Err(_) => Ok(self.texts[i].clone()),
                }
            }
            Printed::Value { value, .. }
                if !matches!(value.kind(), ValueKind::Seq | ValueKind::Map) =>
            {
                self.count(self.texts[i].len())?;
                Ok(self.texts[i].clone())
            }
            _ => Ok(key_text(self.whole(i)?)),
        }
    }

    /// Resolves tokens in the strings (and keys) of a value printed whole.
    fn strings(&mut self, v: Value) -> Result<Value, TemplateError> {
        Ok(match v {
            Value::String(s) if s.contains(START) => Value::String(self.text(&s)?),
            Value::Array(items) => Value::Array(
                items
                    .into_iter()
                    .map(|x| self.strings(x))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => {
                let mut out = Map::new();
                for (k, x) in map {
                    out.insert(self.text(&k)?, self.strings(x)?);
                }
                Value::Object(out)
            }
            other => other,
        })
    }

    fn node(&mut self, n: &Doc, shape: Option<&Shape>, path: &str) -> Result<Value, TemplateError> {
        match n {
            Doc::String(s) => match self.printer.single_token(s) {
                Some(i) if self.is_plain(i, shape) => self.whole(i),
                _ => self.text(s).map(Value::String),
            },
            Doc::Seq(items) => {
                let shapes = match shape {
                    Some(Shape::Seq(s)) if s.len() == items.len() => Some(s),
                    _ => None,
                };
                let mut out = Vec::with_capacity(items.len());
                for (j, item) in items.iter().enumerate() {
                    let here = format!("{path}[{j}]");
                    out.push(self.node(item, shapes.map(|s| &s[j]), &here)?);
                }
                Ok(Value::Array(out))
            }
            Doc::Map(entries) => {
                let shapes = match shape {
                    Some(Shape::Map(s)) if s.len() == entries.len() => Some(s),
                    _ => None,
                };
                let mut out = Map::new();
                for (j, (k, v)) in entries.iter().enumerate() {
                    let v_shape = shapes.map(|s| &s[j].1);
                    // A key is text: quoted or not, a value printed as the whole key gives
                    // the same key (see `whole_key`).
                    let key = match self.printer.single_token(k) {
                        Some(i) => self.whole_key(i)?,
                        None => self.text(k)?,
                    };
                    let here = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    if out.contains_key(&key) {
                        return Err(TemplateError::new(
                            here,
                            "is given twice (once the values are put in, two keys of one mapping are the same)",
                        ));
                    }
                    let value = self.node(v, v_shape, &here)?;
                    out.insert(key, value);
                }
                Ok(Value::Object(out))
            }
            Doc::Null => Ok(Value::Null),
            Doc::Bool(b) => Ok(Value::Bool(*b)),
            Doc::Number(n) => Ok(Value::Number(n.clone())),
        }
    }
}

/// A template value as JSON (through the engine's own JSON writer, as `tojson` does).
fn json_of(value: &minijinja::Value) -> Option<Value> {
    let text = minijinja::filters::tojson(
        value,
        None,
        Kwargs::from_iter(std::iter::empty::<(String, minijinja::Value)>()),
    )
    .ok()?;
    serde_json::from_str(text.as_str()?).ok()
}

fn too_big() -> TemplateError {
    TemplateError::new(
        "workloadTemplate",
        format!("renders to more than {RENDERED_MAX_BYTES} bytes once the values are put in"),
    )
}

/// The rendered document as YAML reads it, in its order, read the way `serde_json::Value`
/// reads YAML (keys as their text: `1.10:` is the key `"1.10"`; a float YAML cannot write as
/// JSON is null).
#[derive(Debug)]
enum Doc {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Seq(Vec<Doc>),
    Map(Vec<(String, Doc)>),
}

impl<'de> serde::Deserialize<'de> for Doc {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Doc, D::Error> {
        d.deserialize_any(DocVisitor)
    }
}

struct DocVisitor;

impl<'de> serde::de::Visitor<'de> for DocVisitor {
    type Value = Doc;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Doc, E> {
        Ok(Doc::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Doc, E> {
        Ok(Doc::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Doc, E> {
        Ok(Doc::Number(v.into()))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Doc, E> {
        Ok(i64::try_from(v).map_or_else(|_| Doc::String(v.to_string()), |v| Doc::Number(v.into())))
    }
    fn visit_u128<E>(self, v: u128) -> Result<Doc, E> {
        Ok(u64::try_from(v).map_or_else(|_| Doc::String(v.to_string()), |v| Doc::Number(v.into())))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Doc, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Doc::Null, Doc::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Doc, E> {
        Ok(Doc::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Doc, E> {
        Ok(Doc::String(v))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Doc, E> {
        Ok(Doc::String(String::from_utf8_lossy(v).into_owned()))
    }
    fn visit_unit<E>(self) -> Result<Doc, E> {
        Ok(Doc::Null)
    }
    fn visit_none<E>(self) -> Result<Doc, E> {
        Ok(Doc::Null)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Doc, D::Error> {
        serde::Deserialize::deserialize(d)
    }
    fn visit_newtype_struct<D: serde::Deserializer<'de>>(self, d: D) -> Result<Doc, D::Error> {
        serde::Deserialize::deserialize(d)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Doc, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Doc::Seq(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Doc, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry::<String, Doc>()? {
            entries.push(entry);
        }
        Ok(Doc::Map(entries))
    }
}

/// The numbered text's document, as far as [`read_document`] needs it: its structure, and
/// which scalars YAML read as numbers.
#[derive(Debug)]
enum Shape {
    Number,
    Other,
    Seq(Vec<Shape>),
    Map(Vec<(Shape, Shape)>),
}

impl<'de> serde::Deserialize<'de> for Shape {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Shape, D::Error> {
        d.deserialize_any(ShapeVisitor)
    }
}

struct ShapeVisitor;

impl<'de> serde::de::Visitor<'de> for ShapeVisitor {
    type Value = Shape;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Shape, E> {
        Ok(Shape::Other)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Shape, E> {
        Ok(Shape::Number)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Shape, E> {
        Ok(Shape::Number)
    }
    fn visit_i128<E>(self, _: i128) -> Result<Shape, E> {
        Ok(Shape::Number)
    }
    fn visit_u128<E>(self, _: u128) -> Result<Shape, E> {
        Ok(Shape::Number)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Shape, E> {
        Ok(Shape::Number)
    }
    fn visit_str<E>(self, _: &str) -> Result<Shape, E> {
        Ok(Shape::Other)
    }
    fn visit_bytes<E>(self, _: &[u8]) -> Result<Shape, E> {
        Ok(Shape::Other)
    }
    fn visit_unit<E>(self) -> Result<Shape, E> {
        Ok(Shape::Other)
    }
    fn visit_none<E>(self) -> Result<Shape, E> {
        Ok(Shape::Other)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Shape, D::Error> {
        serde::Deserialize::deserialize(d)
    }
    fn visit_newtype_struct<D: serde::Deserializer<'de>>(self, d: D) -> Result<Shape, D::Error> {
        serde::Deserialize::deserialize(d)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Shape::Seq(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Shape, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Shape::Map(entries))
    }
}

/// A mapping key from a value printed whole.
fn key_text(v: Value) -> String {
    match v {
        Value::String(s) => s,
        Value::Null => "null".to_string(),
        other => other.to_string(),
    }
}

/// A string printed alone as a plain scalar, typed the way YAML types a plain scalar (and the
/// way it was typed when values were pasted into the text): `8080` a number, `true` a boolean,
/// `null`, `~` or nothing null; anything else — and anything with a character that could make
/// YAML structure — a string.
pub(crate) fn typed(s: &str) -> Value {
    if matches!(s, "" | "~" | "null" | "Null" | "NULL") {
        return Value::Null;
    }
    // Plain decimal integers, the common case, without the parser.
    if let Some(digits) = s.strip_prefix('-').or(Some(s))
        && !digits.is_empty()
        && digits.len() <= 18
        && digits.bytes().all(|b| b.is_ascii_digit())
        && let Ok(i) = s.parse::<i64>()
    {
        return Value::from(i);
    }
    let simple = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '+' | '.' | '_'));
    // Only numbers (digits, a sign, a point first) and booleans are typed; other words are
    // strings, and need no parser.
    let maybe = s.starts_with(|c: char| c.is_ascii_digit() || matches!(c, '-' | '+' | '.'))
        || matches!(s, "true" | "True" | "TRUE" | "false" | "False" | "FALSE");
    if simple
        && maybe
        && let Ok(Value::Object(mut m)) = crate::yaml::parse_one::<Value>(&format!("v: {s}"))
        && let Some(v @ (Value::Bool(_) | Value::Number(_))) = m.remove("v")
    {
        return v;
    }
    Value::String(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn plain_strings_type_like_yaml() {
        for (s, v) in [
            ("8080", json!(8080)),
            ("-3", json!(-3)),
            ("0.5", json!(0.5)),
            ("1.10", json!(1.1)),
            ("1e3", json!(1000.0)),
            ("0x1F", json!(31)),
            ("true", json!(true)),
            ("false", json!(false)),
            ("", Value::Null),
            ("~", Value::Null),
            ("null", Value::Null),
            ("yes", json!("yes")),
            ("-", json!("-")),
            ("---", json!("---")),
            ("a: b", json!("a: b")),
            ("[1]", json!("[1]")),
            ("true ", json!("true ")),
            ("1\n2", json!("1\n2")),
            (".inf", json!(".inf")),
        ] {
            assert_eq!(typed(s), v, "{s:?}");
        }
    }
}
