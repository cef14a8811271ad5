//! Rendering templates with tera: the documented context, `secret()`, strict undefined
//! variables, and errors located in the file the template came from.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;

use regex::Regex;
use serde_json::{json, Value};

use super::diag::{Diagnostic, ErrorKind};
use super::model::{Image, ParamValue, Platform, RecipeName, SecretRef, Target, Template};
use super::params::{secret_reference, workdir_ref};

/// What a template sees. Built once per (image, recipe) and reused for all its templates.
pub struct RenderEnv {
    platform: Platform,
    context: tera::Context,
    secrets: BTreeMap<String, SecretRef>,
}

impl RenderEnv {
    /// The platform the templates render for.
    pub fn platform(&self) -> Platform {
        self.platform
    }

    /// The context of an image's own templates (user data, image checks).
    pub fn for_image(image: &Image, target: &Target) -> Self {
        Self::new(image, target, None, &BTreeMap::new())
    }

    /// The context of one recipe as used by `image`.
    pub fn for_recipe(
        image: &Image,
        target: &Target,
        recipe: &RecipeName,
        params: &BTreeMap<String, ParamValue>,
    ) -> Self {
        Self::new(image, target, Some(recipe), params)
    }

    fn new(
        image: &Image,
        target: &Target,
        recipe: Option<&RecipeName>,
        params: &BTreeMap<String, ParamValue>,
    ) -> Self {
        let platform = image.platform;
        let mut secrets = BTreeMap::new();
        let mut p = serde_json::Map::new();
        for (k, v) in params {
            let jv = match (plain(v), v) {
                (Some(j), _) => j,
                (None, ParamValue::Secret(r)) => {
                    secrets.insert(k.clone(), r.clone());
                    json!(secret_reference(platform, k))
                }
                (None, _) => continue,
            };
            p.insert(k.clone(), jv);
        }
        let mut context = tera::Context::new();
        context.insert(
            "image",
            &json!({
                "name": image.name.as_str(),
                "description": image.description,
                "version": image.version.to_string(),
                "platform": platform.as_str(),
                "architecture": image.architecture.as_str(),
                "communicator": match image.build.communicator {
                    crate::catalog::model::Communicator::Ssh => "ssh",
                    crate::catalog::model::Communicator::Ssm => "ssm",
                },
            }),
        );
        context.insert(
            "target",
            &json!({
                "name": target.name,
                "ssm_prefix": target.ssm_prefix,
                "regions": target.regions.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
            }),
        );
        if let Some(r) = recipe {
            context.insert("recipe", &json!({ "name": r.as_str() }));
            context.insert("params", &Value::Object(p));
        } else {
            // Image-level templates (user data) see the parameters of the recipes the image
            // uses, `recipes["teamcity-agent"].server_url`, the first use of each; secrets are
            // left out, since user data is readable by anyone who can describe the instance.
            let mut recipes = serde_json::Map::new();
            for u in &image.recipes {
                let params: serde_json::Map<String, Value> = u
                    .params
                    .iter()
                    .filter_map(|(k, v)| Some((k.clone(), plain(v)?)))
                    .collect();
                recipes
                    .entry(u.recipe.as_str().to_string())
                    .or_insert(Value::Object(params));
            }
            context.insert("recipes", &Value::Object(recipes));
        }
        context.insert("workdir", workdir_ref(platform));
        Self {
            platform,
            context,
            secrets,
        }
    }

    /// The live inputs' context, `inputs.<name>.sha256` / `.value` / `.source`.
    pub fn with_inputs(mut self, inputs: &Value) -> Self {
        self.context.insert("inputs", inputs);
        self
    }

    /// The statements that fetch, before `script` runs, every secret parameter it refers to
    /// (see `params::secret_fetch`); empty when it uses none.
    pub fn secret_prelude(&self, script: &str) -> String {
        self.secrets
            .iter()
            .filter(|(name, _)| script.contains(&secret_reference(self.platform, name)))
            .map(|(name, r)| super::params::secret_fetch(self.platform, name, r))
            .collect()
    }

    /// Renders a template that is not a script (env values, URLs, paths, files, checks, user
    /// data): a secret there would never be looked up, so using one is an error.
    pub fn render_plain(&self, t: &Template) -> Result<String, Diagnostic> {
        let uses = self.secrets.keys().find_map(|k| {
            let needle = format!("params.{k}");
            t.text.find(&needle).map(|i| (i, needle))
        });
        let uses = uses.or_else(|| t.text.find("secret(").map(|i| (i, "secret(".to_string())));
        if let Some((i, needle)) = uses {
            if t.text.contains("{{") || t.text.contains("{%") {
                let off = t.offset + if t.exact { i } else { 0 };
                return Err(t
                    .src
                    .diag(ErrorKind::InvalidValue, off..off + needle.len(), "a secret can only be used in a script")
                    .with_hint("secrets render as a run-time lookup that only a shell or PowerShell script performs; read it in the script instead"));
            }
        }
        self.render(t)
    }

    /// Renders `t`; the error points into the template's file.
    pub fn render(&self, t: &Template) -> Result<String, Diagnostic> {
        if !t.text.contains("{{") && !t.text.contains("{%") && !t.text.contains("{#") {
            return Ok(t.text.clone());
        }
        let tera = parsed(t)?;
        SECRETS.with(|s| *s.borrow_mut() = Some((self.platform, self.secrets.clone())));
        let out = tera.render(NAME, &self.context);
        SECRETS.with(|s| *s.borrow_mut() = None);
        out.map_err(|e| locate_error(t, &e))
    }
}

/// The name of the one template in each parsed tera instance.
const NAME: &str = "t";

thread_local! {
    /// The secrets of the render in progress on this thread: tera functions cannot see the
    /// context, and registering a closure per render would mean re-creating tera per render.
    static SECRETS: RefCell<Option<(Platform, BTreeMap<String, SecretRef>)>> = const { RefCell::new(None) };
}

fn secret_fn(args: &HashMap<String, Value>) -> tera::Result<Value> {
    let name = args
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| tera::Error::msg("secret() needs name=\"<secret parameter>\""))?;
    SECRETS.with(|s| match &*s.borrow() {
        Some((platform, secrets)) => match secrets.get(name) {
            Some(_) => Ok(json!(secret_reference(*platform, name))),
            None => Err(tera::Error::msg(format!(
                "secret(name=\"{name}\"): `{name}` is not a secret parameter of this recipe"
            ))),
        },
        None => Err(tera::Error::msg(
            "secret() is only available in recipe templates",
        )),
    })
}

/// The `sh` and `ps` filters: a value as one single-quoted word of a POSIX shell or
/// PowerShell (a list as several, separated by `sep`), whatever it holds: quotes of every kind,
/// `$(...)`, backticks, newlines. A secret's run-time lookup passes through as it is (it is a
/// quoted reference already). NUL cannot be in a script argument at all: an error.
fn quote_filter(
    v: &Value,
    name: &str,
    quote: fn(&str) -> String,
    sep: &str,
) -> tera::Result<Value> {
    let one = |v: &Value| -> tera::Result<String> {
        let s = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            other => {
                return Err(tera::Error::msg(format!(
                    "the `{name}` filter quotes text, numbers and lists of them, not {other}"
                )))
            }
        };
        let secret = SECRETS.with(|sec| {
            sec.borrow().as_ref().is_some_and(|(platform, secrets)| {
                secrets
                    .keys()
                    .any(|name| secret_reference(*platform, name) == s)
            })
        });
        if secret {
            return Ok(s);
        }
        if s.contains('\0') {
            return Err(tera::Error::msg(format!(
                "the `{name}` filter got a value with a NUL character, which no script argument can hold"
            )));
        }
        Ok(quote(&s))
    };
    let out = match v {
        Value::Array(items) => items
            .iter()
            .map(one)
            .collect::<tera::Result<Vec<_>>>()?
            .join(sep),
        _ => one(v)?,
    };
    Ok(Value::String(out))
}

/// The template parsed once (a syntax error is located in its file).
fn parsed(t: &Template) -> Result<&tera::Tera, Diagnostic> {
    if let Some(tera) = t.parsed.0.get() {
        return Ok(tera);
    }
    if let Some(m) = FORBIDDEN_TAG.find(&t.text) {
        let off = t.offset + m.start();
        let tag = m
            .as_str()
            .trim_start_matches("{%")
            .trim_start_matches('-')
            .trim();
        return Err(t
            .src
            .diag(ErrorKind::TemplateSyntax, off..off + m.len(), format!("`{tag}` is not available in bakery templates"))
            .with_hint("a recipe's templates are self-contained: put shared text in a parameter or a file step"));
    }
    let mut tera = tera::Tera::default();
    tera.register_function("secret", secret_fn);
    tera.register_filter("sh", |v: &Value, _: &HashMap<String, Value>| {
        quote_filter(v, "sh", crate::remote::sh_quote, " ")
    });
    tera.register_filter("ps", |v: &Value, _: &HashMap<String, Value>| {
        quote_filter(v, "ps", crate::remote::powershell::ps_quote, ", ")
    });
    // Anything that depends on the machine or the moment would make fingerprints lie (and
    // get_env could copy the baking host's credentials into a script).
    for f in ["get_env", "now", "get_random"] {
        tera.register_function(f, move |_: &HashMap<String, Value>| -> tera::Result<Value> {
            Err(tera::Error::msg(format!(
                "`{f}()` is not available in bakery templates: its result would depend on the machine that renders it"
            )))
        });
    }
    tera.add_raw_template(NAME, &t.text)
        .map_err(|e| locate_error(t, &e))?;
    Ok(t.parsed.0.get_or_init(|| tera))
}

/// Checks template syntax (and keeps the parse for rendering).
pub fn check_syntax(t: &Template) -> Result<(), Diagnostic> {
    parsed(t).map(|_| ())
}

/// Tags that reach outside the one template (and could include it again, forever).
static FORBIDDEN_TAG: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\{%-?\s*(include|import|extends|macro)\b").expect("regex"));
static POS: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"--> (\d+):(\d+)").expect("regex"));
static VAR: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"Variable `([^`]+)` not found").expect("regex"));

fn chain(e: &tera::Error) -> Vec<String> {
    let mut out = vec![e.to_string()];
    let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(c) = cur {
        out.push(c.to_string());
        cur = c.source();
    }
    out
}

fn locate_error(t: &Template, e: &tera::Error) -> Diagnostic {
    let d = locate_in_text(t, e);
    if t.exact {
        return d;
    }
    // Escapes in the TOML string: the position inside the text is not the position in the
    // file, so point at the start of the value and keep the message.
    let mut at = t
        .src
        .diag(d.kind, t.offset..t.offset + 1, d.message.clone());
    at.hint = d.hint;
    at
}

fn locate_in_text(t: &Template, e: &tera::Error) -> Diagnostic {
    let parts = chain(e);
    let all = parts.join("\n");
    if let Some(c) = POS.captures(&all) {
        // A parse error: pest gives line:col inside the template.
        let line: usize = c[1].parse().unwrap_or(1);
        let col: usize = c[2].parse().unwrap_or(1);
        let expected = all
            .lines()
            .find_map(|l| l.trim().strip_prefix("= "))
            .unwrap_or("invalid template syntax")
            .to_string();
        let off = t.offset + offset_in(&t.text, line, col);
        return t
            .src
            .diag(ErrorKind::TemplateSyntax, off..off + 1, format!("template syntax: {expected}"))
            .with_hint("tera syntax: {{ expression }}, {% statement %}, {# comment #}; write {% raw %}...{% endraw %} around literal braces");
    }
    if let Some(c) = VAR.captures(&all) {
        let var = c[1].to_string();
        let first = var.split(['.', '[']).next().unwrap_or(&var).to_string();
        let (start, len) = find_use(&t.text, &var).unwrap_or((0, 0));
        let off = t.offset + start;
        let hint = match first.as_str() {
            "params" => "declare it under [params] in recipe.toml, or fix the name",
            _ => "templates see image, target, recipe, params, workdir and secret(name=...)",
        };
        return t
            .src
            .diag(
                ErrorKind::UndefinedVariable,
                off..off + len,
                format!("undefined variable `{var}`"),
            )
            .with_hint(hint);
    }
    // Other render errors (a bad filter argument, secret() misuse): the most specific message.
    let msg = parts.last().cloned().unwrap_or_default();
    // The first `quoted` name from the error chain that appears in the template.
    let needle = if all.contains("secret(name=") {
        "secret(".to_string()
    } else {
        parts
            .iter()
            .flat_map(|p| p.split('`').skip(1).step_by(2))
            .map(|n| n.trim_end_matches("()").to_string())
            .find(|n| !n.is_empty() && t.text.contains(n.as_str()))
            .unwrap_or_default()
    };
    let (start, len) = if needle.is_empty() {
        (0, 0)
    } else {
        t.text.find(&needle).map_or((0, 0), |i| (i, needle.len()))
    };
    let off = t.offset + start;
    t.src.diag(
        ErrorKind::TemplateError,
        off..off + len,
        format!("template error: {msg}"),
    )
}

/// Byte offset of 1-based (line, col) in `text`.
fn offset_in(text: &str, line: usize, col: usize) -> usize {
    let mut off = 0;
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if i + 1 == line {
            return off
                + l.char_indices()
                    .nth(col.saturating_sub(1))
                    .map_or(l.len(), |(b, _)| b);
        }
        off += l.len();
    }
    text.len()
}

/// Where `var` is used inside a tera tag, preferring `{{ var` over a bare occurrence.
fn find_use(text: &str, var: &str) -> Option<(usize, usize)> {
    let mut from = 0;
    let mut fallback = None;
    while let Some(i) = text[from..].find(var) {
        let at = from + i;
        let before = &text[..at];
        let open = before.rfind("{{").max(before.rfind("{%"));
        let close = before.rfind("}}").max(before.rfind("%}"));
        let next = text[at + var.len()..].chars().next();
        let whole = !matches!(next, Some(c) if c.is_alphanumeric() || c == '_');
        if whole && open.is_some() && open > close {
            return Some((at, var.len()));
        }
        fallback = fallback.or(Some((at, var.len())));
        from = at + var.len();
    }
    fallback
}

/// A parameter's value as the templates see it; `None` for a secret (a run-time lookup).
fn plain(v: &ParamValue) -> Option<Value> {
    Some(match v {
        ParamValue::String(s) => json!(s),
        ParamValue::Int(i) => json!(i),
        ParamValue::Bool(b) => json!(b),
        ParamValue::List(l) => json!(l),
        ParamValue::Secret(_) => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::diag::SourceText;
    use std::path::PathBuf;

    #[test]
    fn positions_inside_templates() {
        assert_eq!(offset_in("ab\ncd", 2, 2), 4);
        assert_eq!(offset_in("ab", 1, 1), 0);
        assert_eq!(
            find_use("x params.a {{ params.a }}", "params.a"),
            Some((14, 8))
        );
        assert_eq!(
            find_use("{{ params.ab }} {{ params.a }}", "params.a"),
            Some((19, 8))
        );
    }

    /// Hostile values that a parameter might hold.
    const HOSTILE: &[&str] = &[
        "plain",
        "",
        "it's",
        "a \"double\" quote",
        "$(touch /tmp/bakery-pwned)",
        "`touch /tmp/bakery-pwned`",
        "${HOME} $HOME",
        "a;b && c || d | e > f < g",
        "line one\nline two\r\n",
        "‘curly’ ‚low‛ quotes'",
        "back\\slash \\'",
        "tab\there * ? [a] ~ # !",
        "ünïcødé ✓",
    ];

    fn render_with(text: &str, v: &Value) -> tera::Result<String> {
        let t = Template::file(SourceText::new(PathBuf::from("t.sh"), text.to_string()));
        let tera = parsed(&t).map_err(|d| tera::Error::msg(d.to_string()))?;
        let mut cx = tera::Context::new();
        cx.insert("v", v);
        tera.render(NAME, &cx)
    }

    /// `| sh` makes any value one shell word that bash reads back as exactly the value.
    #[test]
    fn the_sh_filter_quotes_anything_bash_reads_back() {
        for value in HOSTILE {
            let quoted = render_with("{{ v | sh }}", &json!(value)).expect("render");
            let out = std::process::Command::new("bash")
                .arg("-c")
                .arg(format!("printf '%s' {quoted}"))
                .output()
                .expect("bash");
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                *value,
                "{value:?} quoted as {quoted}"
            );
        }
        // A list is several words.
        let quoted = render_with("{{ v | sh }}", &json!(["a b", "c'd"])).expect("render");
        assert_eq!(quoted, "'a b' 'c'\\''d'");
        // NUL cannot be an argument at all.
        let e = render_with("{{ v | sh }}", &json!("a\u{0}b")).unwrap_err();
        assert!(format!("{e:?}").contains("NUL"), "{e:?}");
    }

    /// PowerShell reads a single-quoted string up to any of its five single quotes, a doubled
    /// one standing for itself: `| ps` doubles every one of them, so the string ends where it
    /// should and reads back as the value.
    #[test]
    fn the_ps_filter_quotes_every_powershell_quote() {
        fn unquote(q: &str) -> Option<String> {
            let quotes = crate::remote::powershell::PS_SINGLE_QUOTES;
            let mut chars = q.chars().peekable();
            if !quotes.contains(&chars.next()?) {
                return None;
            }
            let mut out = String::new();
            while let Some(c) = chars.next() {
                if quotes.contains(&c) {
                    match chars.peek() {
                        Some(n) if quotes.contains(n) => {
                            out.push(c);
                            chars.next();
                        }
                        // The closing quote must be the last character.
                        None => return Some(out),
                        Some(_) => return None,
                    }
                } else {
                    out.push(c);
                }
            }
            None
        }
        for value in HOSTILE {
            let quoted = render_with("{{ v | ps }}", &json!(value)).expect("render");
            assert_eq!(
                unquote(&quoted).as_deref(),
                Some(*value),
                "{value:?} quoted as {quoted}"
            );
        }
        let quoted = render_with("{{ v | ps }}", &json!(["a", "b’c"])).expect("render");
        assert_eq!(quoted, "'a', 'b’’c'");
        assert!(render_with("{{ v | ps }}", &json!({"a": 1})).is_err());
    }

    /// What the filters produce parses as a script, with the same parsers as validation; the
    /// same values put in raw break the script.
    #[test]
    fn quoted_values_parse_and_raw_ones_do_not() {
        use crate::catalog::syntax::{errors, Lang};
        for value in HOSTILE {
            let sh = render_with("echo {{ v | sh }} >/dev/null\n", &json!(value)).expect("render");
            assert_eq!(errors(Lang::Bash, &sh), vec![], "{sh}");
            let ps = render_with("Write-Output {{ v | ps }}\n", &json!(value)).expect("render");
            assert_eq!(errors(Lang::PowerShell, &ps), vec![], "{ps}");
        }
        let raw = render_with("echo '{{ v }}'\n", &json!("it's")).expect("render");
        assert!(!errors(Lang::Bash, &raw).is_empty(), "{raw}");
        // (The grammar does not know PowerShell's Unicode quotes, so only the ASCII one shows
        // here; the quoting rule test above covers the others.)
        let raw = render_with("Write-Output '{{ v }}'\n", &json!("it's")).expect("render");
        assert!(!errors(Lang::PowerShell, &raw).is_empty(), "{raw}");
    }
}
