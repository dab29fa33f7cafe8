//! `nook history IMAGE`: the steps an image was made of, newest first, as docker shows them.
//!
//! The rows come from the image config's `history`, paired in order with the layers for the
//! steps that made one (`empty_layer` steps have none, and size 0); a layer's size is its
//! unpacked size from the store's layer record. Only the top row has an id: nook keeps no
//! parent chain, so the steps below read `<missing>`, as docker shows layers of pulled
//! images. Output is docker's table, `--format json` lines, or a `{{.Field}}` template.

use anyhow::{Result, bail};
use clap::Args;
use serde_json::json;

use super::Session;
use super::format::{human_age, human_size, parse_rfc3339, print_table};
use crate::build::config::ImageConfig;
use crate::digest::Digest;
use crate::store::{ImageRecord, StoreError};

/// Where CREATED BY is cut (docker's width).
const CREATED_BY_WIDTH: usize = 45;

/// The fields a template may name, with their table headers (docker's).
const FIELDS: [(&str, &str); 6] = [
    ("ID", "IMAGE"),
    ("CreatedSince", "CREATED"),
    ("CreatedAt", "CREATED AT"),
    ("CreatedBy", "CREATED BY"),
    ("Size", "SIZE"),
    ("Comment", "COMMENT"),
];

const DEFAULT_TABLE: &str =
    r"table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}";

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Print sizes and dates in human-readable form (-H=false: bytes and RFC 3339 times).
    #[arg(short = 'H', long, default_value_t = true, action = clap::ArgAction::Set,
          num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub human: bool,
    /// Do not truncate ids and commands.
    #[arg(long)]
    pub no_trunc: bool,
    /// Print only the ids.
    #[arg(short, long)]
    pub quiet: bool,
    /// Output format: table (default), json, or a template such as '{{.ID}}\t{{.Size}}'.
    #[arg(long)]
    pub format: Option<String>,
    pub image: String,
}

/// One step of the image, as printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The image's id on the top row only.
    pub id: Option<Digest>,
    pub created: Option<String>,
    pub created_by: String,
    /// Unpacked bytes of the step's layer (0 for a step that made none).
    pub size: u64,
    pub comment: String,
}

/// The rows of `nook history`, newest first. `layer_size` gives a stored layer's size.
pub fn history_rows(
    config: &ImageConfig,
    rec: &ImageRecord,
    layer_size: impl Fn(&Digest) -> Option<u64>,
) -> Vec<Row> {
    let mut layers = rec.layers.iter();
    let mut rows: Vec<Row> = if config.history.is_empty() {
        // A config without history (some tools write none): one row per layer.
        layers
            .map(|l| Row {
                id: None,
                created: config.created.clone(),
                created_by: String::new(),
                size: layer_size(&l.diff_id).unwrap_or(0),
                comment: String::new(),
            })
            .collect()
    } else {
        config
            .history
            .iter()
            .map(|h| {
                let size = if h.empty_layer {
                    0
                } else {
                    // More non-empty steps than layers is a broken image: show it, sizeless.
                    layers
                        .next()
                        .and_then(|l| layer_size(&l.diff_id))
                        .unwrap_or(0)
                };
                Row {
                    id: None,
                    created: h.created.clone(),
                    created_by: h.created_by.clone().unwrap_or_default(),
                    size,
                    comment: h.comment.clone().unwrap_or_default(),
                }
            })
            .collect()
    };
    rows.reverse();
    if let Some(top) = rows.first_mut() {
        top.id = Some(rec.id.clone());
    }
    rows
}

/// How the rows are shown.
#[derive(Debug, Clone, Copy)]
struct View {
    human: bool,
    trunc: bool,
}

/// A row's value for a template field.
fn field(row: &Row, name: &str, v: View) -> Option<String> {
    let created_at = || row.created.clone().unwrap_or_default();
    Some(match name {
        "ID" => match &row.id {
            Some(id) if v.trunc => id.short().to_owned(),
            Some(id) => id.to_string(),
            None => "<missing>".to_owned(),
        },
        "CreatedSince" if v.human => row
            .created
            .as_deref()
            .and_then(parse_rfc3339)
            .map(human_age)
            .unwrap_or_else(|| "N/A".into()),
        "CreatedSince" | "CreatedAt" => created_at(),
        "CreatedBy" => created_by(&row.created_by, v.trunc),
        "Size" if v.human => human_size(row.size),
        "Size" => row.size.to_string(),
        "Comment" => row.comment.clone(),
        _ => return None,
    })
}

/// CREATED BY as docker shows it: tabs as spaces; cut to 45 characters with `…` unless
/// `--no-trunc` (and then on one line, so the table stays a table).
fn created_by(s: &str, trunc: bool) -> String {
    let s = s.replace('\t', " ");
    if !trunc {
        return s;
    }
    let s = s.replace(['\n', '\r'], " ");
    if s.chars().count() <= CREATED_BY_WIDTH {
        return s;
    }
    let mut cut: String = s.chars().take(CREATED_BY_WIDTH - 1).collect();
    cut.push('…');
    cut
}

/// Fills a `{{.Field}}` template (with `\t` and `\n` escapes, as docker reads them).
fn render(template: &str, value: impl Fn(&str) -> Option<String>) -> Result<String> {
    let text = template.replace(r"\t", "\t").replace(r"\n", "\n");
    let mut out = String::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            bail!("--format: '{{{{' without '}}}}' in {template:?}");
        };
        let inner = after[..end].trim();
        let known = inner.strip_prefix('.').and_then(&value);
        let Some(v) = known else {
            let names: Vec<String> = FIELDS
                .iter()
                .map(|(n, _)| format!("{{{{.{n}}}}}"))
                .collect();
            bail!(
                "--format: unknown placeholder {{{{{inner}}}}}: use {}",
                names.join(", ")
            );
        };
        out.push_str(&v);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Prints the rows through a template; `table` adds headers and aligns the tab-separated cells.
fn print_template(rows: &[Row], format: &str, v: View) -> Result<()> {
    let (table, template) = match format.strip_prefix("table") {
        Some(rest) if rest.is_empty() || rest.starts_with(' ') => (true, rest.trim_start()),
        _ => (false, format),
    };
    let template = if table && template.is_empty() {
        DEFAULT_TABLE.trim_start_matches("table ")
    } else {
        template
    };
    let mut lines = Vec::new();
    for r in rows {
        lines.push(render(template, |name| field(r, name, v))?);
    }
    if !table {
        for l in lines {
            println!("{l}");
        }
        return Ok(());
    }
    let header = render(template, |name| {
        FIELDS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, h)| (*h).to_owned())
    })?;
    let headers: Vec<&str> = header.split('\t').collect();
    let cells: Vec<Vec<String>> = lines
        .iter()
        .map(|l| l.split('\t').map(str::to_owned).collect())
        .collect();
    print_table(&headers, &cells);
    Ok(())
}

fn print_json(rows: &[Row], v: View) {
    for r in rows {
        let f = |name| field(r, name, v).unwrap_or_default();
        let line = json!({
            "ID": f("ID"),
            "CreatedSince": f("CreatedSince"),
            "CreatedAt": f("CreatedAt"),
            "CreatedBy": f("CreatedBy"),
            "Size": f("Size"),
            "Comment": f("Comment"),
        });
        println!("{line}");
    }
}

pub fn history(session: &Session, a: HistoryArgs) -> Result<i32> {
    let Some(store) = session.readable_store()? else {
        return Err(StoreError::NoSuchImage(a.image).into());
    };
    let rec = store.find_image(&a.image)?;
    let config = crate::build::commit::image_config(&store, &rec)?;
    let rows = history_rows(&config, &rec, |d| {
        store.layer_record(d).ok().map(|r| r.size)
    });
    let v = View {
        human: a.human,
        trunc: !a.no_trunc,
    };
    if a.quiet {
        for r in &rows {
            println!("{}", field(r, "ID", v).unwrap_or_default());
        }
        return Ok(0);
    }
    match a.format.as_deref() {
        None | Some("") => print_template(&rows, DEFAULT_TABLE, v)?,
        Some("json") => print_json(&rows, v),
        Some(t) => print_template(&rows, t, v)?,
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::config::History;
    use crate::store::LayerRef;

    fn step(by: &str, empty: bool) -> History {
        History {
            created: Some("2024-01-02T03:04:05Z".into()),
            created_by: Some(by.into()),
            empty_layer: empty,
            ..History::default()
        }
    }

    fn image(n_layers: u8, history: Vec<History>) -> (ImageConfig, ImageRecord) {
        let layers: Vec<LayerRef> = (0..n_layers)
            .map(|i| LayerRef {
                digest: Digest::sha256_of(&[b'b', i]),
                diff_id: Digest::sha256_of(&[i]),
                size: 1,
                media_type: String::new(),
            })
            .collect();
        let config = ImageConfig {
            history,
            ..ImageConfig::default()
        };
        let rec = ImageRecord {
            id: Digest::sha256_of(b"img"),
            manifest_digest: Digest::sha256_of(b"manifest"),
            manifest_media_type: String::new(),
            index_digest: None,
            repo_digests: vec![],
            platform: crate::registry::platform::Platform::host(),
            created: None,
            layers,
            config_size: 1,
            size: 1,
            pulled_at: 0,
        };
        (config, rec)
    }

    /// Layer `i` is `(i + 1) * 1000` bytes.
    fn size_of(d: &Digest) -> Option<u64> {
        (0..10u8)
            .find(|i| Digest::sha256_of(&[*i]) == *d)
            .map(|i| (u64::from(i) + 1) * 1000)
    }

    #[test]
    fn rows_pair_non_empty_steps_with_layers_newest_first() {
        let (c, rec) = image(
            2,
            vec![
                step("ADD rootfs.tar /", false),
                step("ENV A=1", true),
                step("RUN make", false),
                step("CMD [\"sh\"]", true),
            ],
        );
        let rows = history_rows(&c, &rec, size_of);
        let got: Vec<(&str, u64)> = rows
            .iter()
            .map(|r| (r.created_by.as_str(), r.size))
            .collect();
        assert_eq!(
            got,
            vec![
                ("CMD [\"sh\"]", 0),
                ("RUN make", 2000),
                ("ENV A=1", 0),
                ("ADD rootfs.tar /", 1000)
            ]
        );
        assert_eq!(
            rows[0].id.as_ref(),
            Some(&rec.id),
            "the top row is the image"
        );
        assert!(rows[1..].iter().all(|r| r.id.is_none()));
    }

    #[test]
    fn a_history_longer_than_the_layers_or_missing_is_still_shown() {
        let (c, rec) = image(1, vec![step("a", false), step("b", false)]);
        let sizes: Vec<u64> = history_rows(&c, &rec, size_of)
            .iter()
            .map(|r| r.size)
            .collect();
        assert_eq!(sizes, vec![0, 1000]);
        let (c, rec) = image(2, vec![]);
        let sizes: Vec<u64> = history_rows(&c, &rec, size_of)
            .iter()
            .map(|r| r.size)
            .collect();
        assert_eq!(sizes, vec![2000, 1000], "one row per layer, newest first");
    }

    #[test]
    fn fields_follow_human_and_trunc() {
        let (c, rec) = image(1, vec![step(&"x".repeat(60), false)]);
        let rows = history_rows(&c, &rec, size_of);
        let short = View {
            human: true,
            trunc: true,
        };
        let long = View {
            human: false,
            trunc: false,
        };
        let by = field(&rows[0], "CreatedBy", short).unwrap();
        assert_eq!(by.chars().count(), 45);
        assert!(by.ends_with('…'));
        assert_eq!(field(&rows[0], "CreatedBy", long).unwrap().len(), 60);
        assert_eq!(field(&rows[0], "Size", short).unwrap(), "1kB");
        assert_eq!(field(&rows[0], "Size", long).unwrap(), "1000");
        assert_eq!(field(&rows[0], "ID", short).unwrap(), rec.id.short());
        assert_eq!(field(&rows[0], "ID", long).unwrap(), rec.id.to_string());
        assert_eq!(
            field(&rows[0], "CreatedSince", long).unwrap(),
            "2024-01-02T03:04:05Z"
        );
        assert!(
            field(&rows[0], "CreatedSince", short)
                .unwrap()
                .ends_with(" ago")
        );
        assert_eq!(created_by("RUN a\tb\nc", true), "RUN a b c");
        assert_eq!(created_by("RUN a\tb\nc", false), "RUN a b\nc");
    }

    #[test]
    fn templates_fill_known_fields_and_name_unknown_ones() {
        let value = |n: &str| (n == "ID").then(|| "abc".to_owned());
        assert_eq!(render(r"{{.ID}}\t{{ .ID }}!", value).unwrap(), "abc\tabc!");
        let err = render("{{.Nope}}", value).unwrap_err().to_string();
        assert!(
            err.contains("{{Nope}}") || err.contains("{{.Nope}}"),
            "{err}"
        );
        assert!(err.contains("{{.CreatedBy}}"), "{err}");
        assert!(render("{{.ID", value).is_err());
    }

    #[test]
    fn dash_h_takes_false_after_an_equals_sign() {
        use clap::Parser;
        #[derive(Parser)]
        struct T {
            #[command(flatten)]
            a: HistoryArgs,
        }
        let t = T::try_parse_from(["t", "-H=false", "x"]).unwrap();
        assert!(!t.a.human);
        let t = T::try_parse_from(["t", "--human", "x"]).unwrap();
        assert!(t.a.human);
        let t = T::try_parse_from(["t", "x"]).unwrap();
        assert!(t.a.human && !t.a.quiet && !t.a.no_trunc);
    }
}
