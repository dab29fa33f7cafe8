//! Which stages a build runs, in which order: the target (the last stage, or `--target`) and
//! the stages it needs through `FROM`, `COPY --from` and `RUN --mount=from=`, nothing else.

use std::collections::BTreeSet;

use super::dockerfile::{Dockerfile, Kind};

/// What is wrong with the stages asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("target stage {0:?} could not be found")]
    NoTarget(String),
    #[error("the Dockerfile has no stage")]
    Empty,
}

/// The stage `word` names from the point of view of stage `current`: an earlier stage's name
/// (case-insensitive) or index. `None` means an image.
pub fn stage_ref(df: &Dockerfile, word: &str, current: usize) -> Option<usize> {
    let lower = word.to_ascii_lowercase();
    if let Some(i) = df.stages[..current.min(df.stages.len())]
        .iter()
        .position(|s| s.name.as_deref() == Some(lower.as_str()))
    {
        return Some(i);
    }
    match word.parse::<usize>() {
        Ok(i) if i < current => Some(i),
        _ => None,
    }
}

/// The `from=` value of a `--mount` spec, if any (the key in any case, as the mount parser
/// takes it).
pub fn mount_from(spec: &str) -> Option<&str> {
    spec.split(',').find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        k.eq_ignore_ascii_case("from").then_some(v)
    })
}

/// How `--from` words are expanded for planning (with the global ARGs).
pub type Expand<'a> = dyn Fn(&str) -> String + 'a;

/// The stages stage `i` reads from.
pub fn needs(df: &Dockerfile, i: usize, base: &str, expand: &Expand<'_>) -> Vec<usize> {
    let mut out = Vec::new();
    if let Some(s) = stage_ref(df, base, i) {
        out.push(s);
    }
    for ins in &df.stages[i].instructions {
        let from: Vec<&str> = match &ins.kind {
            Kind::Copy(c) | Kind::Add(c) => c.from.as_deref().into_iter().collect(),
            Kind::Run(r) => r.mounts.iter().filter_map(|m| mount_from(m)).collect(),
            _ => Vec::new(),
        };
        out.extend(
            from.into_iter()
                .filter_map(|f| stage_ref(df, &expand(f), i)),
        );
    }
    out
}

/// The stages to build, in Dockerfile order. `bases[i]` is stage `i`'s FROM word expanded.
pub fn select(
    df: &Dockerfile,
    target: Option<&str>,
    bases: &[String],
    expand: &Expand<'_>,
) -> Result<Vec<usize>, PlanError> {
    if df.stages.is_empty() {
        return Err(PlanError::Empty);
    }
    let last = match target {
        None => df.stages.len() - 1,
        Some(t) => {
            let lower = t.to_ascii_lowercase();
            df.stages
                .iter()
                .position(|s| s.name.as_deref() == Some(lower.as_str()))
                .ok_or_else(|| PlanError::NoTarget(t.to_owned()))?
        }
    };
    let mut wanted = BTreeSet::new();
    let mut todo = vec![last];
    while let Some(i) = todo.pop() {
        if wanted.insert(i) {
            let base = bases.get(i).map_or("", String::as_str);
            todo.extend(needs(df, i, base, expand));
        }
    }
    Ok(wanted.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::dockerfile::parse;

    fn same(w: &str) -> String {
        w.to_owned()
    }

    fn bases(df: &Dockerfile) -> Vec<String> {
        df.stages.iter().map(|s| s.base.clone()).collect()
    }

    #[test]
    fn target_builds_only_what_it_needs() {
        let df = parse(
            "FROM busybox AS a\nRUN true\nFROM busybox AS b\nRUN exit 3\nFROM a AS c\nCOPY --from=0 /x /y\nFROM busybox\nCOPY --from=b /z /z\n",
            "Dockerfile",
        )
        .unwrap();
        let b = bases(&df);
        assert_eq!(select(&df, Some("c"), &b, &same).unwrap(), vec![0, 2]);
        assert_eq!(select(&df, Some("C"), &b, &same).unwrap(), vec![0, 2]);
        assert_eq!(select(&df, None, &b, &same).unwrap(), vec![1, 3]);
        assert_eq!(select(&df, Some("a"), &b, &same).unwrap(), vec![0]);
        assert!(matches!(
            select(&df, Some("nope"), &b, &same),
            Err(PlanError::NoTarget(_))
        ));
    }

    #[test]
    fn mounts_from_stages_count() {
        let df = parse(
            "FROM busybox AS tools\nRUN true\nFROM busybox\nRUN --mount=type=bind,from=tools,target=/t true\n",
            "Dockerfile",
        )
        .unwrap();
        assert_eq!(select(&df, None, &bases(&df), &same).unwrap(), vec![0, 1]);
        assert_eq!(stage_ref(&df, "tools", 1), Some(0));
        assert_eq!(stage_ref(&df, "tools", 0), None, "only earlier stages");
        assert_eq!(stage_ref(&df, "busybox:latest", 1), None);
        assert_eq!(mount_from("type=bind,FROM=tools"), Some("tools"));
    }

    #[test]
    fn from_words_are_expanded_for_planning() {
        let df = parse(
            "ARG SRC=tools\nFROM busybox AS tools\nRUN true\nFROM busybox AS other\nRUN exit 3\nFROM busybox\nCOPY --from=$SRC /x /y\n",
            "Dockerfile",
        )
        .unwrap();
        let expand = |w: &str| w.replace("$SRC", "tools");
        assert_eq!(select(&df, None, &bases(&df), &expand).unwrap(), vec![0, 2]);
    }
}
