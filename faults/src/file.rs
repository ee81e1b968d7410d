//! Schedule files: a schedule written by hand in TOML, or stored as JSON (the form a report
//! keeps), parsed and checked with errors that name the fault, the field and the line.
//!
//! TOML holds an array of `[[fault]]` tables, each with `kind`, `at_ms` and that kind's
//! fields; nested values (a partition's shape, a disk mode) are inline tables:
//!
//! ```toml
//! [[fault]]
//! kind = "crash"
//! node = "ring-1"
//! at_ms = 20000
//! restart_after_ms = 20000
//!
//! [[fault]]
//! kind = "partition"
//! at_ms = 30000
//! duration_ms = 5000
//! nodes = ["ring-1", "ring-2", "ring-3"]
//! shape = { kind = "isolate", node = "ring-2" }
//! one_way = true
//! ```
//!
//! JSON is the serde form of [`Schedule`]: `{"faults": [{"at_ms": 20000, "kind": "crash",
//! ...}]}`. Fault indices in errors count from 0 in file order.
//!
//! Latency and loss faults name their links one of three ways: `nodes = ["ring-2"]` (every
//! link of those nodes, both ways), `links = [["api-1", "ring-2"]]` (those links, both ways,
//! or with `one_way = true` only from the first node to the second), or `every_link = true`.
//!
//! Checked beyond the types: node names (when a node list is given), positive durations, a
//! loss rate in `0..=1`, exactly one way of naming a fault's links, links between two
//! different nodes, a partition over at least two nodes that include an isolated one,
//! clock steps within a day and drifts within 10%, and keys given once. An empty file is
//! refused in both forms; no faults is written `fault = []` or `{"faults": []}`.
//! Not checked: whether faults overlap or fit a budget (see [`crate::budget`]), or whether
//! they fall inside the run.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use crate::{Fault, FaultKind, PartitionShape, Schedule};

/// Why a schedule file was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    /// The 1-based line, when known.
    pub line: Option<usize>,
    /// The 1-based column, when the parser gives one.
    pub column: Option<usize>,
    /// The fault's index in file order, when the error is in one fault.
    pub fault: Option<usize>,
    /// The field at fault, when known.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(line) = self.line {
            parts.push(format!("line {line}"));
        }
        if let Some(column) = self.column {
            parts.push(format!("column {column}"));
        }
        if let Some(fault) = self.fault {
            parts.push(format!("fault {fault}"));
        }
        if let Some(field) = &self.field {
            parts.push(format!("field `{field}`"));
        }
        write!(f, "{}: {}", parts.join(", "), self.message)
    }
}

impl std::error::Error for FileError {}

/// A semantic error in one fault, before it is placed on a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The fault's index.
    pub fault: usize,
    /// The field at fault.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// Where one fault and each of its fields start in the file.
#[derive(Debug, Default)]
struct Lines {
    fault: usize,
    fields: BTreeMap<String, usize>,
}

/// The TOML top level: only `[[fault]]` tables (`fault = []` for none).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlFile {
    fault: Option<Vec<BTreeMap<String, toml::Spanned<toml::Value>>>>,
}

/// The largest clock step a fault may take, either way: a day.
pub const CLOCK_OFFSET_US_MAX: i64 = 86_400_000_000;
/// The largest drift a fault may set, either way: 10%.
pub const CLOCK_DRIFT_PPM_MAX: i64 = 100_000;

/// A file with no faults in it is more likely the wrong file than a wish for no faults, so an
/// empty schedule must be written out.
fn empty_file(form: &str) -> FileError {
    FileError {
        line: Some(1),
        column: None,
        fault: None,
        field: None,
        message: format!("the file holds no schedule; a schedule with no faults is {form}"),
    }
}

/// The first name a parser's message quotes in backticks, as the field it is about.
fn quoted_name(message: &str) -> Option<String> {
    let name = message.split('`').nth(1)?;
    let is_name = !name.is_empty() && name.chars().all(|c| c.is_alphanumeric() || c == '_');
    is_name.then(|| name.to_string())
}

/// Parses and checks a TOML schedule; `nodes`, if given, are the only valid node names.
pub fn parse_toml(text: &str, nodes: Option<&[String]>) -> Result<Schedule, FileError> {
    // 1. Syntax and the top level, with toml's spans.
    let file: TomlFile = toml::from_str(text).map_err(|e| FileError {
        line: e.span().map(|s| line_of(text, s.start)),
        column: None,
        fault: None,
        field: quoted_name(e.message()).or_else(|| {
            // A duplicate key's message names no key; its span covers it.
            let spanned = e.span().and_then(|span| text.get(span));
            spanned.and_then(|key| quoted_name(&format!("`{}`", key.trim())))
        }),
        message: e.message().to_string(),
    })?;
    let Some(raws) = file.fault else {
        return Err(empty_file("`fault = []`"));
    };

    // 2. Each fault on its own, so an error names its index and field.
    let mut faults = Vec::new();
    let mut lines = Vec::new();
    for (index, raw) in raws.into_iter().enumerate() {
        let fields: BTreeMap<String, usize> = raw
            .iter()
            .map(|(k, v)| (k.clone(), line_of(text, v.span().start)))
            .collect();
        let fault_line = fields.values().min().copied().unwrap_or(1);
        let table: toml::Table = raw.into_iter().map(|(k, v)| (k, v.into_inner())).collect();
        let decode = |without: Option<&str>| {
            let mut table = table.clone();
            if let Some(key) = without {
                table.remove(key);
            }
            toml::Value::Table(table)
                .try_into::<Fault>()
                .map_err(|e| e.message().to_string())
        };
        faults.push(decoded(index, fault_line, &fields, decode)?);
        lines.push(Lines {
            fault: fault_line,
            fields,
        });
    }
    checked(faults, &lines, nodes)
}

/// Parses and checks a JSON schedule; `nodes`, if given, are the only valid node names.
pub fn parse_json(text: &str, nodes: Option<&[String]>) -> Result<Schedule, FileError> {
    // 1. Syntax, with serde_json's line and column.
    let empty = || empty_file(r#"`{"faults": []}`"#);
    if text.trim().is_empty() {
        return Err(empty());
    }
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| FileError {
        line: Some(e.line()),
        column: Some(e.column()),
        fault: None,
        field: None,
        message: e.to_string(),
    })?;
    let top_error = |message: String| FileError {
        line: Some(1),
        column: None,
        fault: None,
        field: Some("faults".into()),
        message,
    };
    let serde_json::Value::Object(mut top) = value else {
        return Err(top_error("expected an object with `faults`".into()));
    };
    if let Some(key) = top.keys().find(|k| *k != "faults") {
        return Err(top_error(format!(
            "unknown field `{key}`, expected `faults`"
        )));
    }
    let raws = match top.remove("faults") {
        None => return Err(empty()),
        Some(serde_json::Value::Array(raws)) => raws,
        Some(_) => return Err(top_error("`faults` must be an array".into())),
    };

    // 2. Each fault on its own, its lines found by scanning the text.
    let (mut lines, duplicate) = json_lines(text);
    if let Some((fault, field, line)) = duplicate {
        return Err(FileError {
            line: Some(line),
            column: None,
            fault: Some(fault),
            message: format!("duplicate key `{field}`"),
            field: Some(field),
        });
    }
    lines.resize_with(raws.len(), Lines::default);
    let mut faults = Vec::new();
    for (index, raw) in raws.into_iter().enumerate() {
        let decode = |without: Option<&str>| {
            let mut raw = raw.clone();
            if let (Some(key), Some(object)) = (without, raw.as_object_mut()) {
                object.remove(key);
            }
            serde_json::from_value::<Fault>(raw).map_err(|e| e.to_string())
        };
        let at = &lines[index];
        faults.push(decoded(index, at.fault, &at.fields, decode)?);
    }
    checked(faults, &lines, nodes)
}

/// Checks the meaning of every fault of `schedule` (indices are the schedule's).
pub fn validate(schedule: &Schedule, nodes: Option<&[String]>) -> Result<(), Invalid> {
    schedule
        .faults
        .iter()
        .enumerate()
        .try_for_each(|(i, f)| check_fault(i, f, nodes))
}

/// Decodes one fault; on failure names the field to blame and its line.
fn decoded(
    index: usize,
    fault_line: usize,
    fields: &BTreeMap<String, usize>,
    decode: impl Fn(Option<&str>) -> Result<Fault, String>,
) -> Result<Fault, FileError> {
    let message = match decode(None) {
        Ok(fault) => return Ok(fault),
        Err(message) => message,
    };

    // The field a message quotes, else the one whose removal changes the complaint to its
    // absence (or cures it): that is how a type error, which names no field, is placed.
    // `kind` and `at_ms` are tried last: their absence is reported before any other error.
    let quoted = message.split('`').nth(1).map(String::from);
    let late = |key: &&String| ["kind", "at_ms"].iter().position(|l| l == *key);
    let mut candidates: Vec<&String> = fields.keys().collect();
    candidates.sort_by_key(late);
    let field = quoted
        .filter(|q| fields.contains_key(q) || message.contains("missing field"))
        .or_else(|| {
            let blamed = candidates.into_iter().find(|key| match decode(Some(key)) {
                Ok(_) => true,
                Err(other) => other.contains(&format!("missing field `{key}`")),
            });
            blamed.cloned()
        });
    let line = field.as_ref().and_then(|f| fields.get(f)).copied();
    Err(FileError {
        line: Some(line.unwrap_or(fault_line)),
        column: None,
        fault: Some(index),
        field,
        message,
    })
}

/// Checks the faults' meaning, then sorts them into a schedule.
fn checked(
    faults: Vec<Fault>,
    lines: &[Lines],
    nodes: Option<&[String]>,
) -> Result<Schedule, FileError> {
    for (index, fault) in faults.iter().enumerate() {
        check_fault(index, fault, nodes).map_err(|invalid| {
            let at = lines.get(index);
            let line = at.and_then(|l| l.fields.get(&invalid.field).copied());
            FileError {
                line: line.or(at.map(|l| l.fault)),
                column: None,
                fault: Some(index),
                field: Some(invalid.field),
                message: invalid.message,
            }
        })?;
    }
    Ok(Schedule::new(faults))
}

/// Checks one fault's names, durations and rates.
fn check_fault(index: usize, fault: &Fault, nodes: Option<&[String]>) -> Result<(), Invalid> {
    let invalid = |field: &str, message: String| Invalid {
        fault: index,
        field: field.into(),
        message,
    };
    let known = |field: &str, name: &String| match nodes {
        Some(nodes) if !nodes.contains(name) => {
            Err(invalid(field, format!("unknown node `{name}`")))
        }
        _ => Ok(()),
    };
    let positive = |field: &str, value: u64| match value {
        0 => Err(invalid(field, "must be positive".into())),
        _ => Ok(()),
    };

    // 1. The kind's own rules.
    match &fault.kind {
        FaultKind::Crash {
            node,
            restart_after_ms,
        } => {
            known("node", node)?;
            if *restart_after_ms == Some(0) {
                let message = "must be positive (omit it to never restart)".into();
                return Err(invalid("restart_after_ms", message));
            }
        }
        FaultKind::Pause { node, .. } | FaultKind::Disk { node, .. } => known("node", node)?,
        FaultKind::Clock {
            node,
            duration_ms,
            offset_us,
            drift_ppm,
        } => {
            known("node", node)?;
            if offset_us.unsigned_abs() > CLOCK_OFFSET_US_MAX.unsigned_abs() {
                let message = format!("{offset_us} µs is more than a day either way");
                return Err(invalid("offset_us", message));
            }
            if drift_ppm.unsigned_abs() > CLOCK_DRIFT_PPM_MAX.unsigned_abs() {
                let message = format!("{drift_ppm} ppm is more than 10% either way");
                return Err(invalid("drift_ppm", message));
            }
            if *duration_ms == Some(0) {
                return Err(invalid(
                    "duration_ms",
                    "must be positive (or omitted)".into(),
                ));
            }
        }
        FaultKind::Partition {
            nodes: over, shape, ..
        } => {
            if over.len() < 2 {
                return Err(invalid(
                    "nodes",
                    "a partition needs at least two nodes".into(),
                ));
            }
            over.iter().try_for_each(|n| known("nodes", n))?;
            if let PartitionShape::Isolate { node } = shape {
                if !over.contains(node) {
                    let message = format!("isolated node `{node}` is not in `nodes`");
                    return Err(invalid("shape", message));
                }
            }
        }
        FaultKind::Latency {
            nodes: over,
            links,
            one_way,
            every_link,
            ..
        }
        | FaultKind::Loss {
            nodes: over,
            links,
            one_way,
            every_link,
            ..
        } => {
            // Exactly one of `nodes`, `links` and `every_link` says which links.
            let named: Vec<&str> = [
                (!over.is_empty()).then_some("nodes"),
                (!links.is_empty()).then_some("links"),
                every_link.then_some("every_link"),
            ]
            .into_iter()
            .flatten()
            .collect();
            match named.as_slice() {
                [] => {
                    let message = "names no links: give `nodes`, `links` or `every_link = true`";
                    return Err(invalid("nodes", message.into()));
                }
                [first, second, ..] => {
                    let message = format!("`{first}` and `{second}` both given; name one");
                    return Err(invalid(second, message));
                }
                [_] => {}
            }
            if *one_way && links.is_empty() {
                let message = "applies only to `links` (a node's links are slowed both ways)";
                return Err(invalid("one_way", message.into()));
            }
            over.iter().try_for_each(|n| known("nodes", n))?;
            for [from, to] in links {
                known("links", from)?;
                known("links", to)?;
                if from == to {
                    let message = format!("`{from}` to itself is not a link");
                    return Err(invalid("links", message));
                }
            }
        }
    }

    // 2. Rates and durations common to several kinds.
    if let FaultKind::Loss { rate, .. } = &fault.kind {
        if !(0.0..=1.0).contains(rate) {
            return Err(invalid("rate", format!("{rate} is outside 0..=1")));
        }
    }
    match &fault.kind {
        FaultKind::Pause { duration_ms, .. }
        | FaultKind::Partition { duration_ms, .. }
        | FaultKind::Latency { duration_ms, .. }
        | FaultKind::Loss { duration_ms, .. }
        | FaultKind::Disk { duration_ms, .. } => positive("duration_ms", *duration_ms),
        FaultKind::Crash { .. } | FaultKind::Clock { .. } => Ok(()),
    }
}

/// The 1-based line of byte `offset`.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The lines of each fault object in a JSON schedule and of its top-level keys: objects that
/// open at depth 2 (inside the top object's `faults` array) and keys at depth 3. Also the
/// first key a fault repeats (fault index, key, line), which JSON parsers silently collapse.
fn json_lines(text: &str) -> (Vec<Lines>, Option<(usize, String, usize)>) {
    let mut faults: Vec<Lines> = Vec::new();
    let mut duplicate = None;
    let (mut depth, mut line) = (0usize, 1usize);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' => line += 1,
            '{' | '[' => {
                if c == '{' && depth == 2 {
                    faults.push(Lines {
                        fault: line,
                        fields: BTreeMap::new(),
                    });
                }
                depth += 1;
            }
            '}' | ']' => depth = depth.saturating_sub(1),
            '"' => {
                // A string; it is a key if a colon follows.
                let start = line;
                let mut name = String::new();
                while let Some(d) = chars.next() {
                    match d {
                        '\\' => name.extend(chars.next()),
                        '"' => break,
                        _ => name.push(d),
                    }
                }
                line += name.matches('\n').count();
                let mut ahead = chars.clone().skip_while(|c| c.is_whitespace());
                if ahead.next() == Some(':') && depth == 3 {
                    let index = faults.len().saturating_sub(1);
                    if let Some(fault) = faults.last_mut() {
                        match fault.fields.entry(name) {
                            Entry::Vacant(slot) => {
                                slot.insert(start);
                            }
                            Entry::Occupied(seen) => {
                                let key = seen.key().clone();
                                duplicate = duplicate.or(Some((index, key, start)));
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    (faults, duplicate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DiskFault;

    fn roles() -> Vec<String> {
        crate::Roles::simulator().all()
    }

    const GOOD: &str = r#"
[[fault]]
kind = "crash"
node = "ring-1"
at_ms = 20000
restart_after_ms = 20000

[[fault]]
kind = "partition"
at_ms = 5000
duration_ms = 3000
nodes = ["ring-1", "ring-2", "ring-3"]
shape = { kind = "isolate", node = "ring-2" }
one_way = true

[[fault]]
kind = "disk"
node = "ring-3"
at_ms = 30000
duration_ms = 100
disk = { kind = "torn_write", keep_bytes = 7 }
"#;

    #[test]
    fn a_hand_written_toml_schedule_parses_sorted() {
        let schedule = parse_toml(GOOD, Some(&roles())).unwrap();
        let kinds: Vec<&str> = schedule.faults.iter().map(Fault::kind_name).collect();
        assert_eq!(kinds, ["partition", "crash", "disk"]);
        assert_eq!(
            schedule.faults[2].kind,
            FaultKind::Disk {
                node: "ring-3".into(),
                disk: DiskFault::TornWrite { keep_bytes: 7 },
                duration_ms: 100,
            }
        );
        let json = serde_json::to_string_pretty(&schedule).unwrap();
        assert_eq!(parse_json(&json, Some(&roles())).unwrap(), schedule);
    }

    #[test]
    fn an_unknown_toml_field_is_named_with_its_line() {
        let text = GOOD.replace("restart_after_ms = 20000", "restart_after = 20000");
        let error = parse_toml(&text, None).unwrap_err();
        assert_eq!((error.fault, error.line), (Some(0), Some(6)), "{error}");
        assert_eq!(error.field.as_deref(), Some("restart_after"), "{error}");
    }

    #[test]
    fn a_toml_type_error_is_placed_on_its_field() {
        let text = GOOD.replace("duration_ms = 3000", "duration_ms = -3");
        let error = parse_toml(&text, None).unwrap_err();
        assert_eq!(error.field.as_deref(), Some("duration_ms"), "{error}");
        assert_eq!((error.fault, error.line), (Some(1), Some(11)), "{error}");
        let text = GOOD.replace("\"torn_write\"", "\"torn\"");
        let error = parse_toml(&text, None).unwrap_err();
        assert_eq!(error.field.as_deref(), Some("disk"), "{error}");
        assert_eq!((error.fault, error.line), (Some(2), Some(21)), "{error}");
    }

    #[test]
    fn toml_syntax_errors_carry_a_line() {
        let error = parse_toml("[[fault]]\nkind = \"crash\nnode = 1\n", None).unwrap_err();
        assert_eq!(error.line, Some(2), "{error}");
        let error = parse_toml("[[faults]]\nkind = \"crash\"\n", None).unwrap_err();
        assert!(error.message.contains("faults"), "{error}");
    }

    #[test]
    fn semantic_errors_name_fault_field_and_line() {
        let text = GOOD.replace("node = \"ring-3\"", "node = \"ring-9\"");
        let error = parse_toml(&text, Some(&roles())).unwrap_err();
        assert_eq!(error.field.as_deref(), Some("node"));
        assert_eq!((error.fault, error.line), (Some(2), Some(18)), "{error}");
        assert!(error.message.contains("ring-9"), "{error}");
        assert!(
            parse_toml(&text, None).is_ok(),
            "names are free without a node list"
        );

        let text = GOOD.replace("restart_after_ms = 20000", "restart_after_ms = 0");
        let error = parse_toml(&text, None).unwrap_err();
        assert_eq!(error.field.as_deref(), Some("restart_after_ms"));
        assert_eq!(error.line, Some(6), "{error}");

        let text = GOOD.replace("node = \"ring-2\" }", "node = \"api\" }");
        let error = parse_toml(&text, None).unwrap_err();
        assert_eq!(
            (error.field.as_deref(), error.line),
            (Some("shape"), Some(13))
        );
    }

    #[test]
    fn a_loss_rate_outside_zero_to_one_is_refused() {
        let text = "[[fault]]\nkind = \"loss\"\nat_ms = 1\nduration_ms = 5\n\
                    nodes = [\"api\"]\nrate = 1.5\n";
        let error = parse_toml(text, None).unwrap_err();
        assert_eq!(
            (error.field.as_deref(), error.line),
            (Some("rate"), Some(6)),
            "{error}"
        );
        assert!(parse_toml(&text.replace("1.5", "1.0"), None).is_ok());
        let text = text
            .replace("duration_ms = 5", "duration_ms = 0")
            .replace("1.5", "0.5");
        let error = parse_toml(&text, None).unwrap_err();
        assert_eq!(
            (error.field.as_deref(), error.line),
            (Some("duration_ms"), Some(4))
        );
    }

    const LINKS: &str = r#"
[[fault]]
kind = "latency"
at_ms = 1000
duration_ms = 5000
nodes = ["ring-2"]
delay_ms = 40
jitter_ms = 0

[[fault]]
kind = "loss"
at_ms = 2000
duration_ms = 5000
links = [["api-1", "ring-2"], ["guild-1", "ring-3"]]
one_way = true
rate = 0.5
"#;

    #[test]
    fn latency_and_loss_faults_name_nodes_links_or_every_link() {
        let schedule = parse_toml(LINKS, Some(&roles())).unwrap();
        assert_eq!(
            schedule.faults[1].kind,
            FaultKind::Loss {
                nodes: Vec::new(),
                links: vec![
                    ["api-1".into(), "ring-2".into()],
                    ["guild-1".into(), "ring-3".into()]
                ],
                one_way: true,
                every_link: false,
                rate: 0.5,
                duration_ms: 5000,
            }
        );
        let json = serde_json::to_string_pretty(&schedule).unwrap();
        assert_eq!(parse_json(&json, Some(&roles())).unwrap(), schedule);
        let every = LINKS.replace("nodes = [\"ring-2\"]", "every_link = true");
        assert!(parse_toml(&every, Some(&roles())).is_ok());
    }

    #[test]
    fn a_bad_link_fault_names_its_field_and_line() {
        let error = |text: &str| parse_toml(text, Some(&roles())).unwrap_err();

        // An unknown node in a link, on the line of `links`.
        let bad = error(&LINKS.replace("\"guild-1\"", "\"guild-9\""));
        assert_eq!(bad.field.as_deref(), Some("links"), "{bad}");
        assert_eq!((bad.fault, bad.line), (Some(1), Some(14)), "{bad}");
        assert!(bad.message.contains("guild-9"), "{bad}");

        // A link of three nodes is a type error, placed on `links`.
        let bad = error(&LINKS.replace("[\"api-1\", \"ring-2\"]", "[\"api-1\", \"a\", \"b\"]"));
        assert_eq!(
            (bad.field.as_deref(), bad.line),
            (Some("links"), Some(14)),
            "{bad}"
        );

        // Two ways of naming the links, and none.
        let both = LINKS.replace(
            "nodes = [\"ring-2\"]",
            "nodes = [\"ring-2\"]\nevery_link = true",
        );
        let bad = error(&both);
        assert_eq!(
            (bad.field.as_deref(), bad.line),
            (Some("every_link"), Some(7)),
            "{bad}"
        );
        let bad = error(&LINKS.replace("nodes = [\"ring-2\"]\n", ""));
        assert_eq!(
            (bad.field.as_deref(), bad.fault),
            (Some("nodes"), Some(0)),
            "{bad}"
        );

        // `one_way` belongs to `links`; a link needs two different nodes.
        let bad = error(&LINKS.replace(
            "nodes = [\"ring-2\"]",
            "nodes = [\"ring-2\"]\none_way = true",
        ));
        assert_eq!(
            (bad.field.as_deref(), bad.line),
            (Some("one_way"), Some(7)),
            "{bad}"
        );
        let bad = error(&LINKS.replace("\"guild-1\", \"ring-3\"", "\"ring-3\", \"ring-3\""));
        assert_eq!(bad.field.as_deref(), Some("links"), "{bad}");
    }

    #[test]
    fn json_errors_name_fault_field_and_line() {
        let text = r#"{
  "faults": [
    { "at_ms": 1, "kind": "crash", "node": "ring-1", "restart_after_ms": 5 },
    {
      "at_ms": 2,
      "kind": "pause",
      "node": "ring-2",
      "duration_ms": "long"
    }
  ]
}"#;
        let error = parse_json(text, None).unwrap_err();
        assert_eq!(error.field.as_deref(), Some("duration_ms"), "{error}");
        assert_eq!((error.fault, error.line), (Some(1), Some(8)), "{error}");

        let text = text.replace("\"long\"", "7").replace("ring-2", "ring-7");
        let error = parse_json(&text, Some(&roles())).unwrap_err();
        assert_eq!(
            (error.field.as_deref(), error.line),
            (Some("node"), Some(7)),
            "{error}"
        );

        let error = parse_json("{\"faults\": [\n{\"at_ms\": 1,,}]}", None).unwrap_err();
        assert_eq!(
            (error.line, error.column.is_some()),
            (Some(2), true),
            "{error}"
        );
        let error = parse_json("{\"fault\": []}", None).unwrap_err();
        assert!(error.message.contains("fault"), "{error}");
    }

    #[test]
    fn an_empty_file_is_refused_in_either_form_and_no_faults_is_said_explicitly() {
        for text in ["", "  \n", "# nothing yet\n"] {
            let error = parse_toml(text, None).unwrap_err();
            assert!(error.message.contains("fault = []"), "{error}");
        }
        let error = parse_json("\n", None).unwrap_err();
        assert!(error.message.contains(r#"{"faults": []}"#), "{error}");
        assert_eq!(parse_toml("fault = []\n", None).unwrap().faults.len(), 0);
        assert_eq!(
            parse_json(r#"{"faults": []}"#, None).unwrap().faults.len(),
            0
        );
    }

    #[test]
    fn an_out_of_range_start_names_at_ms() {
        for start in ["-5", "1e3", "\"soon\""] {
            let text = GOOD.replace("at_ms = 5000", &format!("at_ms = {start}"));
            let error = parse_toml(&text, None).unwrap_err();
            assert_eq!(error.field.as_deref(), Some("at_ms"), "{start}: {error}");
            assert_eq!((error.fault, error.line), (Some(1), Some(10)), "{error}");
        }
        let text = r#"{"faults": [{"at_ms": -1, "kind": "crash", "node": "ring-1"}]}"#;
        let error = parse_json(text, None).unwrap_err();
        assert_eq!(error.field.as_deref(), Some("at_ms"), "{error}");
    }

    #[test]
    fn a_duplicate_key_names_the_field() {
        let text = GOOD.replace("at_ms = 20000", "at_ms = 20000\nat_ms = 30000");
        let error = parse_toml(&text, None).unwrap_err();
        assert_eq!(error.field.as_deref(), Some("at_ms"), "{error}");
        assert_eq!(error.line, Some(6), "{error}");
        let text = r#"{"faults": [{"at_ms": 1, "at_ms": 2, "kind": "crash", "node": "ring-1"}]}"#;
        let error = parse_json(text, None).unwrap_err();
        assert_eq!(error.field.as_deref(), Some("at_ms"), "{error}");
    }

    #[test]
    fn clock_steps_and_drifts_beyond_a_day_or_ten_percent_are_refused() {
        let clock = |offset: i64, drift: i64| {
            format!(
                "[[fault]]\nkind = \"clock\"\nnode = \"api\"\nat_ms = 1\n\
                 offset_us = {offset}\ndrift_ppm = {drift}\n"
            )
        };
        assert!(parse_toml(&clock(-86_400_000_000, 100_000), None).is_ok());
        let error = parse_toml(&clock(86_400_000_001, 0), None).unwrap_err();
        assert_eq!(
            (error.field.as_deref(), error.line),
            (Some("offset_us"), Some(5))
        );
        let error = parse_toml(&clock(i64::MIN, 0), None).unwrap_err();
        assert_eq!(error.field.as_deref(), Some("offset_us"), "{error}");
        let error = parse_toml(&clock(0, -100_001), None).unwrap_err();
        assert_eq!(
            (error.field.as_deref(), error.line),
            (Some("drift_ppm"), Some(6))
        );
    }
}
