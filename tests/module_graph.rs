//! The shape of `src/`, checked on every test run: no import circle between its modules (every
//! module may use the modules below it, never one that directly or through others uses it back),
//! and no function over 100 lines without a reason in a comment.
//!
//! Each file is one module (`src/ha/step.rs` is `ha::step`, `src/build/mod.rs` is `build`). An
//! edge is any path a module names outside its `#[cfg(test)]` items (`use` trees, types,
//! calls): `crate::a::b::Item`, `super::x`, `self::x` or a child module's name, resolved to the
//! longest module prefix. Declaring a child (`mod x;`) is not an edge.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use syn::visit::Visit;

/// Module path (`""` for the crate root) -> the file defining it.
fn modules(src: &Path) -> BTreeMap<String, PathBuf> {
    let mut found = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let relative = path.strip_prefix(src).expect("under src");
            let mut parts: Vec<String> = relative
                .iter()
                .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
                .collect();
            match parts.last().map(String::as_str) {
                // The binary is its own crate: it uses the library by name.
                Some("main") if parts.len() == 1 => continue,
                Some("lib") if parts.len() == 1 => parts.clear(),
                Some("mod") => {
                    parts.pop();
                }
                _ => {}
            }
            found.insert(parts.join("::"), path);
        }
    }
    found
}

fn is_cfg_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|attr| {
        attr.path().is_ident("cfg")
            && attr.meta.require_list().is_ok_and(|list| {
                list.tokens
                    .to_string()
                    .split_whitespace()
                    .any(|t| t == "test")
            })
    })
}

/// Collects the module-qualified paths one file names.
struct PathCollector<'a> {
    module: &'a str,
    children: BTreeSet<String>,
    paths: Vec<Vec<String>>,
}

impl PathCollector<'_> {
    /// `crate::a`, `super::a`, `self::a` or `child::a` as a path from the crate root.
    fn absolute(&self, segments: &[String]) -> Option<Vec<String>> {
        let mut here: Vec<String> = if self.module.is_empty() {
            Vec::new()
        } else {
            self.module.split("::").map(str::to_string).collect()
        };
        let first = segments.first()?;
        let rest = &segments[1..];
        match first.as_str() {
            "crate" => Some(rest.to_vec()),
            "self" => {
                here.extend_from_slice(rest);
                Some(here)
            }
            "super" => {
                here.pop();
                let mut rest = rest;
                while rest.first().map(String::as_str) == Some("super") {
                    here.pop();
                    rest = &rest[1..];
                }
                here.extend_from_slice(rest);
                Some(here)
            }
            name if self.children.contains(name) => {
                here.extend_from_slice(segments);
                Some(here)
            }
            _ => None,
        }
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => self.record(prefix, Some(n.ident.to_string())),
            syn::UseTree::Rename(r) => self.record(prefix, Some(r.ident.to_string())),
            syn::UseTree::Glob(_) => self.record(prefix, None),
            syn::UseTree::Group(g) => {
                for item in &g.items {
                    self.use_tree(prefix, item);
                }
            }
        }
    }

    fn record(&mut self, prefix: &[String], last: Option<String>) {
        let mut segments = prefix.to_vec();
        segments.extend(last.filter(|l| l != "self"));
        if let Some(path) = self.absolute(&segments) {
            self.paths.push(path);
        }
    }
}

impl<'ast> Visit<'ast> for PathCollector<'_> {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        let attrs: &[syn::Attribute] = match item {
            syn::Item::Mod(m) => &m.attrs,
            syn::Item::Fn(f) => &f.attrs,
            syn::Item::Impl(i) => &i.attrs,
            syn::Item::Use(u) => &u.attrs,
            syn::Item::Struct(s) => &s.attrs,
            syn::Item::Enum(e) => &e.attrs,
            syn::Item::Const(c) => &c.attrs,
            syn::Item::Static(s) => &s.attrs,
            syn::Item::Trait(t) => &t.attrs,
            syn::Item::Type(t) => &t.attrs,
            syn::Item::Macro(m) => &m.attrs,
            _ => &[],
        };
        if is_cfg_test(attrs) {
            return;
        }
        if let syn::Item::Use(item_use) = item {
            self.use_tree(&mut Vec::new(), &item_use.tree);
            return;
        }
        syn::visit::visit_item(self, item);
    }

    fn visit_impl_item(&mut self, item: &'ast syn::ImplItem) {
        if let syn::ImplItem::Fn(f) = item
            && is_cfg_test(&f.attrs)
        {
            return;
        }
        syn::visit::visit_impl_item(self, item);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        if segments.len() > 1
            && let Some(absolute) = self.absolute(&segments)
        {
            self.paths.push(absolute);
        }
        syn::visit::visit_path(self, path);
    }
}

/// Module -> the modules it names (with no self edges).
fn import_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let modules = modules(src);
    let mut graph = BTreeMap::new();
    for (module, file) in &modules {
        let text = std::fs::read_to_string(file).expect("read module");
        let parsed = syn::parse_file(&text)
            .unwrap_or_else(|e| panic!("{}: does not parse: {e}", file.display()));
        let children = parsed
            .items
            .iter()
            .filter_map(|item| match item {
                syn::Item::Mod(m) if m.content.is_none() => Some(m.ident.to_string()),
                _ => None,
            })
            .collect();
        let mut collector = PathCollector {
            module,
            children,
            paths: Vec::new(),
        };
        collector.visit_file(&parsed);
        let mut targets = BTreeSet::new();
        for path in collector.paths {
            let target = (0..=path.len())
                .rev()
                .map(|n| path[..n].join("::"))
                .find(|prefix| modules.contains_key(prefix));
            if let Some(target) = target.filter(|t| t != module) {
                targets.insert(target);
            }
        }
        graph.insert(module.clone(), targets);
    }
    graph
}

/// The strongly connected components with more than one module (Tarjan).
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'g> {
        graph: &'g BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        next: usize,
        found: Vec<Vec<String>>,
    }
    fn visit<'g>(s: &mut State<'g>, node: &'g str) {
        s.index.insert(node, s.next);
        s.low.insert(node, s.next);
        s.next += 1;
        s.stack.push(node);
        s.on_stack.insert(node);
        for next in s.graph.get(node).into_iter().flatten() {
            let next = next.as_str();
            if !s.index.contains_key(next) {
                visit(s, next);
                let low = s.low[node].min(s.low[next]);
                s.low.insert(node, low);
            } else if s.on_stack.contains(next) {
                let low = s.low[node].min(s.index[next]);
                s.low.insert(node, low);
            }
        }
        if s.low[node] == s.index[node] {
            let mut component = Vec::new();
            while let Some(member) = s.stack.pop() {
                s.on_stack.remove(member);
                component.push(member.to_string());
                if member == node {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        found: Vec::new(),
    };
    for node in graph.keys() {
        if !state.index.contains_key(node.as_str()) {
            visit(&mut state, node);
        }
    }
    state.found
}

fn name(module: &str) -> &str {
    if module.is_empty() { "crate" } else { module }
}

#[test]
fn no_import_circle_between_src_modules() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = import_graph(&src);
    let found = circles(&graph);
    let mut report = String::new();
    for component in &found {
        report.push_str("circle:\n");
        for module in component {
            let inside: Vec<&str> = graph[module]
                .iter()
                .filter(|t| component.contains(t))
                .map(|t| name(t))
                .collect();
            report.push_str(&format!("  {} -> {}\n", name(module), inside.join(", ")));
        }
    }
    assert!(found.is_empty(), "import circles in src/:\n{report}");
}

/// The check itself: a two-module circle through `super` and `crate` paths is found, a child
/// declaration alone is not an edge, and `#[cfg(test)]` items are not counted.
#[test]
fn the_check_finds_a_circle_and_ignores_tests() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path();
    std::fs::create_dir(src.join("a")).expect("mkdir");
    std::fs::write(src.join("lib.rs"), "pub mod a;\npub mod b;\n").expect("write");
    std::fs::write(
        src.join("a/mod.rs"),
        "pub mod inner;\npub fn f() { crate::b::g(); }\n",
    )
    .expect("write");
    std::fs::write(src.join("a/inner.rs"), "pub struct S;\n").expect("write");
    std::fs::write(
        src.join("b.rs"),
        "use super::a::inner::S;\npub fn g() {}\n#[cfg(test)]\nmod tests { use crate::a::f; }\n",
    )
    .expect("write");
    let graph = import_graph(src);
    assert_eq!(graph["b"], BTreeSet::from(["a::inner".to_string()]));
    assert!(circles(&graph).is_empty(), "{graph:?}");

    std::fs::write(
        src.join("a/inner.rs"),
        "pub struct S;\nfn h() { crate::b::g(); }\n",
    )
    .expect("write");
    let graph = import_graph(src);
    assert_eq!(
        circles(&graph),
        vec![vec!["a::inner".to_string(), "b".to_string()]]
    );
}

/// The modules declared `#[cfg(test)] mod x;` (test-only files).
fn test_only_modules(src: &Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (module, file) in modules(src) {
        let text = std::fs::read_to_string(&file).expect("read module");
        let Ok(parsed) = syn::parse_file(&text) else {
            continue;
        };
        for item in parsed.items {
            if let syn::Item::Mod(m) = item
                && m.content.is_none()
                && is_cfg_test(&m.attrs)
            {
                let child = m.ident.to_string();
                found.insert(if module.is_empty() {
                    child
                } else {
                    format!("{module}::{child}")
                });
            }
        }
    }
    found
}

/// Functions (outside `#[cfg(test)]` items) longer than `limit` lines, counted from the `fn` line
/// to its closing brace, unless a comment right above says why (`Long because ...`).
fn long_functions(text: &str, limit: usize) -> Vec<(String, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let braces = |line: &str| -> i64 {
        let code = line.split("//").next().unwrap_or_default();
        let mut depth = 0;
        let mut in_string = false;
        let mut previous = ' ';
        for c in code.chars() {
            match c {
                '"' if previous != '\\' => in_string = !in_string,
                '{' if !in_string => depth += 1,
                '}' if !in_string => depth -= 1,
                _ => {}
            }
            previous = c;
        }
        depth
    };
    let item_end = |start: usize| -> usize {
        let mut depth = 0;
        let mut opened = false;
        for (k, line) in lines.iter().enumerate().skip(start) {
            depth += braces(line);
            opened |= line.contains('{');
            if opened && depth <= 0 || !opened && line.trim_end().ends_with(';') {
                return k;
            }
        }
        lines.len().saturating_sub(1)
    };
    let is_fn = |line: &str| {
        let words: Vec<&str> = line.split_whitespace().take(4).collect();
        let fn_at = words.iter().position(|w| *w == "fn");
        fn_at.is_some_and(|i| {
            words[..i]
                .iter()
                .all(|w| w.starts_with("pub") || *w == "async" || *w == "const")
        })
    };
    let mut found = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim_start();
        if line.starts_with("#[cfg(test)]") {
            i = item_end(i + 1) + 1;
            continue;
        }
        if is_fn(line) {
            let end = item_end(i);
            let length = end - i + 1;
            let reason = lines[..i]
                .iter()
                .rev()
                .take_while(|l| {
                    l.trim_start().starts_with("//") || l.trim_start().starts_with("#[")
                })
                .any(|l| l.contains("Long because"));
            if length > limit && !reason {
                let name = line.split("fn ").nth(1).unwrap_or_default();
                let name: String = name
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                found.push((name, length));
            }
            i += 1;
            continue;
        }
        i += 1;
    }
    found
}

#[test]
fn no_function_over_100_lines_without_a_reason() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let test_only = test_only_modules(&src);
    let mut report = String::new();
    for (module, file) in modules(&src) {
        if test_only.contains(&module) {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("read module");
        for (name, length) in long_functions(&text, 100) {
            report.push_str(&format!(
                "  {}: fn {name}: {length} lines\n",
                file.display()
            ));
        }
    }
    assert!(
        report.is_empty(),
        "functions over 100 lines (split them, or say why in a `// Long because ...` comment above):\n{report}"
    );
}

/// The length check itself: a long function is found, one with a reason and test code are not.
#[test]
fn the_length_check_counts_from_fn_to_its_brace() {
    let body = "    let x = \"{\";\n".repeat(101);
    let text = format!(
        "pub async fn long() {{\n{body}}}\n// Long because: a table.\nfn excused() {{\n{body}}}\n\
         fn short() {{\n}}\n#[cfg(test)]\nmod tests {{\n    fn in_test() {{\n{body}    }}\n}}\n"
    );
    assert_eq!(long_functions(&text, 100), vec![("long".to_string(), 103)]);
}
