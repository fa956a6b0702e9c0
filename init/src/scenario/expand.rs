//! From files to scenario instances: parameters, `--long` overrides, the
//! matrix, and `${...}` substitution.
//!
//! A file's `[params]` are defaults (`[long.params]` replaces some with
//! `--long`); `[matrix]` has one axis per key, each a list of tables with a
//! `name` (or the name of a file beside the scenario, starting with `_`,
//! holding `[[value]]` tables). Every combination of one value per axis is
//! an instance. `${key}` is a parameter, `${axis}` the axis value's name and
//! `${axis.key}` one of its keys. A string that is exactly `${x}` takes the
//! value's type (an integer stays an integer); inside a longer string the
//! value is written out. Names no parameter defines (`${i}` of a `repeat`)
//! are left for the run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::format::{parse_step, Device, ExpectFailure, Step};

/// One scenario to run: a file, or one combination of its matrix.
#[derive(Debug, Clone)]
pub struct Instance {
    pub name: String,
    pub file: PathBuf,
    pub about: String,
    /// Catalogue entries this scenario stands for (`hmm/anon_read`).
    pub covers: Vec<String>,
    pub timeout: Duration,
    pub device: Device,
    pub expect_failure: Option<ExpectFailure>,
    /// Part of the CI-sized set (else only with `--long`).
    pub ci: bool,
    pub steps: Vec<toml::Table>,
}

/// The keys of a file besides params, long and matrix.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    name: Option<String>,
    about: String,
    #[serde(default)]
    covers: Vec<String>,
    timeout_s: Option<u64>,
    #[serde(default)]
    device: Device,
    expect_failure: Option<ExpectFailure>,
    #[serde(default = "yes")]
    ci: bool,
    /// Instances in the CI-sized set although a matrix value of theirs is
    /// not (`ci = false`): a few chosen combinations of a large matrix.
    #[serde(default)]
    ci_also: Vec<String>,
    #[serde(default)]
    step: Vec<toml::Table>,
}

fn yes() -> bool {
    true
}

/// The default bound of a whole scenario.
pub const DEFAULT_SCENARIO_TIMEOUT_S: u64 = 60;

#[derive(Debug, Clone)]
struct AxisValue {
    axis: String,
    name: String,
    ci: bool,
    expect_failure: Option<ExpectFailure>,
    vars: toml::Table,
}

/// Scenario files under `path` (a file, or a directory walked in name
/// order; files whose name starts with `_` are not scenarios).
pub fn scenario_files(path: &Path) -> Result<Vec<PathBuf>, String> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    let rd = std::fs::read_dir(path).map_err(|e| format!("{}: {e}", path.display()))?;
    for entry in rd {
        let p = entry.map_err(|e| e.to_string())?.path();
        if p.is_dir() {
            out.extend(scenario_files(&p)?);
        } else if p.extension().is_some_and(|e| e == "toml")
            && !p
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('_'))
        {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// Loads one file into its instances.
pub fn load(file: &Path, long: bool) -> Result<Vec<Instance>, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let mut table: toml::Table = text
        .parse()
        .map_err(|e| format!("{}: {e}", file.display()))?;
    let at = |e: String| format!("{}: {e}", file.display());
    let mut params = take_table(&mut table, "params").map_err(at)?;
    let mut long_t = take_table(&mut table, "long").map_err(at)?;
    let long_params = take_table(&mut long_t, "params").map_err(at)?;
    if let Some(k) = long_t.keys().next() {
        return Err(at(format!("[long] knows only params, not {k:?}")));
    }
    if long {
        params.extend(long_params);
    }
    params.insert("long".into(), toml::Value::Boolean(long));
    let matrix = take_table(&mut table, "matrix").map_err(at)?;
    if let Some(toml::Value::Array(steps)) = table.get("step") {
        let steps = includes(file, steps, 0).map_err(at)?;
        table.insert("step".into(), toml::Value::Array(steps));
    }
    let axes = axes(file, &matrix).map_err(at)?;
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut out = Vec::new();
    for combo in combinations(&axes) {
        let vars = variables(&params, &combo);
        let mut t = toml::Value::Table(table.clone());
        substitute(&mut t, &vars);
        let header: Header = t.try_into().map_err(|e| at(format!("{e}")))?;
        let mut name = header.name.unwrap_or_else(|| stem.clone());
        for v in &combo {
            let mentioned = table
                .get("name")
                .and_then(|n| n.as_str())
                .is_some_and(|n| n.contains(&format!("${{{}", v.axis)));
            if !mentioned {
                name = format!("{name}/{}", v.name);
            }
        }
        let expect_failure = combo
            .iter()
            .find_map(|v| v.expect_failure.clone())
            .or(header.expect_failure);
        let name_for_ci = name.clone();
        let inst = Instance {
            name,
            file: file.to_path_buf(),
            about: header.about,
            covers: header.covers,
            timeout: Duration::from_secs(header.timeout_s.unwrap_or(DEFAULT_SCENARIO_TIMEOUT_S)),
            device: header.device,
            expect_failure,
            ci: header.ci && (combo.iter().all(|v| v.ci) || header.ci_also.contains(&name_for_ci)),
            steps: header.step,
        };
        validate(&inst).map_err(|e| at(format!("{}: {e}", inst.name)))?;
        out.push(inst);
    }
    if let Some(toml::Value::Array(also)) = table.get("ci_also") {
        for n in also {
            let n = n.as_str().unwrap_or_default();
            if !out.iter().any(|i| i.name == n) {
                return Err(at(format!(
                    "ci_also names {n:?}, which is no instance here"
                )));
            }
        }
    }
    Ok(out)
}

/// How deep `include` steps may nest.
const MAX_INCLUDE_DEPTH: usize = 4;

/// Replaces each `{ op = "include", file = "_name.toml" }` step with the
/// `[[step]]` tables of that file (beside the scenario; its name starts
/// with `_`), before substitution: an included program sees the
/// including file's parameters and matrix.
fn includes(file: &Path, steps: &[toml::Value], depth: usize) -> Result<Vec<toml::Value>, String> {
    let mut out = Vec::new();
    for s in steps {
        let inc = s
            .as_table()
            .filter(|t| t.get("op").and_then(|v| v.as_str()) == Some("include"));
        let Some(t) = inc else {
            out.push(nested_includes(file, s, depth)?);
            continue;
        };
        let name = match (t.get("file").and_then(|v| v.as_str()), t.len()) {
            (Some(n), 2) if n.starts_with('_') => n,
            _ => return Err("include takes one key, file = \"_name.toml\"".into()),
        };
        if depth >= MAX_INCLUDE_DEPTH {
            return Err(format!(
                "include {name}: nested more than {MAX_INCLUDE_DEPTH} deep"
            ));
        }
        let p = file.parent().unwrap_or(Path::new(".")).join(name);
        let text = std::fs::read_to_string(&p).map_err(|e| format!("{name}: {e}"))?;
        let mut inc: toml::Table = text.parse().map_err(|e| format!("{name}: {e}"))?;
        match inc.remove("step") {
            Some(toml::Value::Array(a)) if inc.is_empty() => {
                out.extend(includes(&p, &a, depth + 1)?)
            }
            _ => {
                return Err(format!(
                    "{name}: an include file holds [[step]] tables only"
                ))
            }
        }
    }
    Ok(out)
}

/// Includes inside the bodies of `repeat`, `parallel` and `fork`.
fn nested_includes(file: &Path, step: &toml::Value, depth: usize) -> Result<toml::Value, String> {
    let mut step = step.clone();
    if let Some(t) = step.as_table_mut() {
        for key in ["steps", "child", "parent"] {
            if let Some(toml::Value::Array(body)) = t.get(key) {
                let body = includes(file, body, depth)?;
                t.insert(key.into(), toml::Value::Array(body));
            }
        }
        if let Some(toml::Value::Array(branches)) = t.get("branches") {
            let mut out = Vec::new();
            for b in branches {
                match b {
                    toml::Value::Array(body) => {
                        out.push(toml::Value::Array(includes(file, body, depth)?))
                    }
                    other => out.push(other.clone()),
                }
            }
            t.insert("branches".into(), toml::Value::Array(out));
        }
    }
    Ok(step)
}

fn take_table(t: &mut toml::Table, key: &str) -> Result<toml::Table, String> {
    match t.remove(key) {
        None => Ok(toml::Table::new()),
        Some(toml::Value::Table(t)) => Ok(t),
        Some(_) => Err(format!("{key} must be a table")),
    }
}

/// The matrix's axes in file order, each with its values.
fn axes(file: &Path, matrix: &toml::Table) -> Result<Vec<Vec<AxisValue>>, String> {
    let mut out = Vec::new();
    for (axis, values) in matrix {
        let list = match values {
            toml::Value::Array(a) => a.clone(),
            toml::Value::String(f) if f.starts_with('_') => {
                let p = file.parent().unwrap_or(Path::new(".")).join(f);
                let text = std::fs::read_to_string(&p).map_err(|e| format!("{f}: {e}"))?;
                let mut t: toml::Table = text.parse().map_err(|e| format!("{f}: {e}"))?;
                match t.remove("value") {
                    Some(toml::Value::Array(a)) => a,
                    _ => return Err(format!("{f}: expected [[value]] tables")),
                }
            }
            _ => return Err(format!("matrix.{axis}: a list of tables or a _file.toml")),
        };
        if list.is_empty() {
            return Err(format!("matrix.{axis} is empty"));
        }
        let mut vals = Vec::new();
        for v in list {
            vals.push(axis_value(axis, v)?);
        }
        out.push(vals);
    }
    Ok(out)
}

fn axis_value(axis: &str, v: toml::Value) -> Result<AxisValue, String> {
    let toml::Value::Table(mut t) = v else {
        return Err(format!("matrix.{axis}: each value is a table with a name"));
    };
    let name = match t.remove("name") {
        Some(toml::Value::String(s)) => s,
        _ => return Err(format!("matrix.{axis}: a value without a name")),
    };
    let ci = match t.remove("ci") {
        None => true,
        Some(toml::Value::Boolean(b)) => b,
        Some(_) => return Err(format!("matrix.{axis}.{name}: ci is true or false")),
    };
    let expect_failure = match t.remove("expect_failure") {
        None => None,
        Some(v) => Some(
            v.try_into()
                .map_err(|e| format!("matrix.{axis}.{name}: {e}"))?,
        ),
    };
    Ok(AxisValue {
        axis: axis.to_string(),
        name,
        ci,
        expect_failure,
        vars: t,
    })
}

/// Every combination of one value per axis (one empty combination when
/// there is no matrix).
fn combinations(axes: &[Vec<AxisValue>]) -> Vec<Vec<AxisValue>> {
    let mut out = vec![Vec::new()];
    for axis in axes {
        let mut next = Vec::new();
        for prefix in &out {
            for v in axis {
                let mut c: Vec<AxisValue> = prefix.clone();
                c.push(v.clone());
                next.push(c);
            }
        }
        out = next;
    }
    out
}

fn variables(params: &toml::Table, combo: &[AxisValue]) -> BTreeMap<String, toml::Value> {
    let mut vars: BTreeMap<String, toml::Value> =
        params.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    for v in combo {
        vars.insert(v.axis.clone(), toml::Value::String(v.name.clone()));
        for (k, x) in &v.vars {
            vars.insert(format!("{}.{k}", v.axis), x.clone());
        }
    }
    vars
}

/// Replaces `${name}` for every name in `vars`, recursively.
pub fn substitute(v: &mut toml::Value, vars: &BTreeMap<String, toml::Value>) {
    substitute_nested(v, vars, 0)
}

/// How many times a value may name another (a cycle stops here).
const MAX_NESTING: usize = 8;

fn substitute_nested(v: &mut toml::Value, vars: &BTreeMap<String, toml::Value>, depth: usize) {
    match v {
        toml::Value::String(s) => {
            if let Some(whole) = s
                .strip_prefix("${")
                .and_then(|r| r.strip_suffix('}'))
                .filter(|n| !n.contains('}'))
            {
                if let Some(x) = vars.get(whole) {
                    *v = x.clone();
                    if v.is_str() && depth < MAX_NESTING {
                        substitute_nested(v, vars, depth + 1);
                    }
                    return;
                }
            }
            // A value may name other values (`${pattern.slot}` inside a
            // section's address): a few passes resolve them.
            for _ in 0..4 {
                let next = interpolate(s, vars);
                if next == *s {
                    break;
                }
                *s = next;
            }
        }
        toml::Value::Array(a) => a.iter_mut().for_each(|x| substitute_nested(x, vars, depth)),
        toml::Value::Table(t) => t
            .iter_mut()
            .for_each(|(_, x)| substitute_nested(x, vars, depth)),
        _ => {}
    }
}

fn interpolate(s: &str, vars: &BTreeMap<String, toml::Value>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        match after.find('}') {
            Some(j) if vars.contains_key(&after[..j]) => {
                match &vars[&after[..j]] {
                    toml::Value::String(x) => out.push_str(x),
                    x => out.push_str(&x.to_string()),
                }
                rest = &after[j + 1..];
            }
            _ => {
                out.push_str("${");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Substitutes one run-time variable (a `repeat` round, a `parallel`
/// thread) into a step table.
pub fn with_var(step: &toml::Table, var: &str, value: u64) -> toml::Table {
    let mut vars = BTreeMap::new();
    vars.insert(var.to_string(), toml::Value::Integer(value as i64));
    let mut v = toml::Value::Table(step.clone());
    substitute(&mut v, &vars);
    match v {
        toml::Value::Table(t) => t,
        _ => unreachable!("substitution keeps a table a table"),
    }
}

/// Parses every step, nested ones with their run-time variable set to 0,
/// and refuses a `${...}` nothing defines.
fn validate(inst: &Instance) -> Result<(), String> {
    if inst.steps.is_empty() {
        return Err("no steps".into());
    }
    validate_steps(&inst.steps, false)
}

fn validate_steps(steps: &[toml::Table], in_child: bool) -> Result<(), String> {
    for (i, t) in steps.iter().enumerate() {
        // Bodies are checked below, with their own variable set.
        let mut own = t.clone();
        for body in ["steps", "branches", "child", "parent"] {
            own.remove(body);
        }
        let text = toml::Value::Table(own).to_string();
        if let Some(at) = text.find("${") {
            let name: String = text[at..].chars().take_while(|c| *c != '}').collect();
            return Err(format!("step {}: {name}}} is not defined", i + 1));
        }
        let p = parse_step(t).map_err(|e| format!("step {}: {e}", i + 1))?;
        if in_child && !super::fork::allowed_in_child(&p.step) {
            return Err(format!(
                "step {}: a forked child runs cpu, check, probe and sleep steps only",
                i + 1
            ));
        }
        let zero = |body: &[toml::Table], var: &str| -> Vec<toml::Table> {
            body.iter().map(|s| with_var(s, var, 0)).collect()
        };
        match &p.step {
            Step::Repeat { var, steps, .. } => validate_steps(&zero(steps, var), in_child)?,
            Step::Parallel {
                var,
                steps,
                branches,
                threads,
            } => {
                let threaded = threads.is_some() && !steps.is_empty() && branches.is_empty();
                let branched = threads.is_none() && steps.is_empty() && !branches.is_empty();
                if !threaded && !branched {
                    return Err(format!(
                        "step {}: parallel takes threads and steps, or branches",
                        i + 1
                    ));
                }
                validate_steps(&zero(steps, var), in_child)?;
                for b in branches {
                    validate_steps(b, in_child)?;
                }
            }
            Step::Fork { child, parent, .. } => {
                validate_steps(child, true)?;
                validate_steps(parent, in_child)?;
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("svm-expand-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    const MATRIX: &str = r#"
name = "m-${section}-${pattern}"
about = "matrix"
covers = ["suite/${section}"]
[params]
size = "4K"
[long.params]
size = "2M"
[matrix]
section = [ { name = "a", remap = true }, { name = "b", remap = false, ci = false } ]
pattern = "_patterns.toml"
[[step]]
op = "alloc"
name = "buf"
size = "${size}"
[[step]]
op = "repeat"
count = "${pattern.execs}"
steps = [ { op = "gpu", vm = "v", kernel = "store", at = "buf+${i}*4", len = 4 } ]
[[step]]
op = "mremap"
alloc = "buf"
when = "${section.remap}"
"#;

    const PATTERNS: &str = r#"
[[value]]
name = "once"
execs = 1
[[value]]
name = "many"
execs = 128
expect_failure = { issue = 16, feature = "x" }
"#;

    #[test]
    fn the_matrix_expands_every_combination() {
        let d = tmpdir("matrix");
        write(&d, "_patterns.toml", PATTERNS);
        let f = write(&d, "m.toml", MATRIX);
        let all = load(&f, false).unwrap();
        let names: Vec<_> = all.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["m-a-once", "m-a-many", "m-b-once", "m-b-many"]);
        assert_eq!(all[0].covers, ["suite/a"]);
        assert!(all[0].ci && !all[2].ci, "ci=false on an axis value");
        assert!(all[0].expect_failure.is_none());
        assert_eq!(all[1].expect_failure.as_ref().unwrap().issue, 16);
        // The typed substitution: execs is an integer, the condition a bool.
        assert_eq!(all[1].steps[1]["count"].as_integer(), Some(128));
        assert_eq!(all[0].steps[2]["when"].as_bool(), Some(true));
        assert_eq!(all[2].steps[2]["when"].as_bool(), Some(false));
        // ${i} is left for the run, the size comes from params.
        assert_eq!(all[0].steps[0]["size"].as_str(), Some("4K"));
        let body = all[0].steps[1]["steps"].as_array().unwrap()[0]
            .as_table()
            .unwrap();
        assert_eq!(body["at"].as_str(), Some("buf+${i}*4"));
        assert_eq!(with_var(body, "i", 3)["at"].as_str(), Some("buf+3*4"));
        let long = load(&f, true).unwrap();
        assert_eq!(long[0].steps[0]["size"].as_str(), Some("2M"));
        assert_eq!(scenario_files(&d).unwrap(), vec![f]);
    }

    const INCLUDE: &str = "[[step]]\nop = \"include\"\nfile = \"_body.toml\"\n";
    const PARALLEL: &str = "[[step]]\nop = \"parallel\"\nthreads = 2\n\
                            steps = [ { op = \"include\", file = \"_body.toml\" } ]\n";

    #[test]
    fn includes_splice_steps_and_see_the_matrix() {
        let d = tmpdir("include");
        write(
            &d,
            "_body.toml",
            "[[step]]\nop = \"alloc\"\nname = \"b${t}\"\nsize = \"${size}\"\n",
        );
        let f = write(
            &d,
            "i.toml",
            &format!("about = \"x\"\n[params]\nsize = 8192\n{INCLUDE}{PARALLEL}"),
        );
        let all = load(&f, false).unwrap_err();
        assert!(
            all.contains("${t}"),
            "the top-level copy has no thread: {all}"
        );
        let f = write(
            &d,
            "j.toml",
            &format!("about = \"x\"\n[params]\nsize = 8192\n{PARALLEL}"),
        );
        let all = load(&f, false).unwrap();
        let body = all[0].steps[0]["steps"].as_array().unwrap()[0]
            .as_table()
            .unwrap();
        assert_eq!(body["size"].as_integer(), Some(8192));
        assert_eq!(body["name"].as_str(), Some("b${t}"));
    }

    #[test]
    fn undefined_variables_and_bad_steps_are_load_errors() {
        let d = tmpdir("bad");
        let f = write(
            &d,
            "u.toml",
            "about = \"x\"\n[[step]]\nop = \"alloc\"\nname = \"${nope}\"\nsize = 4096\n",
        );
        assert!(load(&f, false).unwrap_err().contains("${nope}"));
        let f = write(
            &d,
            "k.toml",
            "about = \"x\"\n[[step]]\nop = \"alloc\"\nname = \"a\"\nsize = 4096\nsise = 1\n",
        );
        assert!(load(&f, false).unwrap_err().contains("sise"));
        let f = write(
            &d,
            "c.toml",
            "about = \"x\"\n[[step]]\nop = \"fork\"\nchild = [ { op = \"vm\", name = \"v\" } ]\n",
        );
        assert!(load(&f, false).unwrap_err().contains("forked child"));
        let f = write(
            &d,
            "h.toml",
            "abut = \"x\"\n[[step]]\nop = \"sleep\"\nus = 1\n",
        );
        assert!(load(&f, false).is_err());
    }
}
