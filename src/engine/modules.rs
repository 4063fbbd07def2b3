//! `import` for playbooks, confined to the playbook directory.
//!
//! Rhai's stock file resolver follows absolute paths and `..`, and caches modules across
//! reloads. Playbooks are compiled self-contained (imports resolved once, at compile time,
//! into the AST), so this resolver does no caching — and it answers only while a playbook
//! is being compiled ([`while_compiling`]). An `import` that would load a file when a run
//! executes (one inside a function, or with a computed path) is refused: a run may only
//! execute code its version hash covers.

use std::{
    cell::Cell,
    path::{Component, Path, PathBuf},
};

use std::sync::Arc;

use rhai::{Engine, EvalAltResult, Module, Position, Scope};

thread_local! {
    /// Set on the thread compiling a playbook, for the duration of the compile.
    static COMPILING: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` (a compile) with imports allowed on this thread; they are refused otherwise.
pub fn while_compiling<T>(f: impl FnOnce() -> T) -> T {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            COMPILING.with(|c| c.set(self.0));
        }
    }
    let _reset = Reset(COMPILING.with(|c| c.replace(true)));
    f()
}

pub struct ConfinedResolver {
    root: PathBuf,
}

impl ConfinedResolver {
    pub fn new(root: &Path) -> ConfinedResolver {
        ConfinedResolver {
            root: root.to_path_buf(),
        }
    }

    fn locate(&self, path: &str, pos: Position) -> Result<PathBuf, Box<EvalAltResult>> {
        let refuse = |why: &str| {
            Box::new(EvalAltResult::ErrorModuleNotFound(
                format!("{path} ({why})"),
                pos,
            ))
        };
        let rel = Path::new(path);
        if rel.is_absolute() || rel.components().any(|c| !matches!(c, Component::Normal(_))) {
            return Err(refuse(
                "imports are paths inside the playbook directory, without `..`",
            ));
        }
        let mut file = self.root.join(rel);
        if file.extension().is_none() {
            file.set_extension("rhai");
        }
        let root = self
            .root
            .canonicalize()
            .map_err(|_| refuse("playbook directory not found"))?;
        let real = file.canonicalize().map_err(|_| refuse("no such file"))?;
        if !real.starts_with(&root) {
            return Err(refuse("a link leading outside the playbook directory"));
        }
        // A FIFO or device would block the compile (and the reload thread) forever.
        if !std::fs::metadata(&real).is_ok_and(|m| m.is_file()) {
            return Err(refuse("not a regular file"));
        }
        Ok(real)
    }
}

impl rhai::ModuleResolver for ConfinedResolver {
    fn resolve(
        &self,
        engine: &Engine,
        _source: Option<&str>,
        path: &str,
        pos: Position,
    ) -> Result<Arc<Module>, Box<EvalAltResult>> {
        if !COMPILING.with(Cell::get) {
            // Not "module not found" (Rhai would replace that with its own bare message):
            // say why.
            return Err(Box::new(EvalAltResult::ErrorRuntime(
                format!(
                    "import `{path}`: imports are resolved when the playbook is compiled (put `import` at the top of the file, with a literal path); loading code while a run executes is refused"
                )
                .into(),
                pos,
            )));
        }
        let file = self.locate(path, pos)?;
        let text = std::fs::read_to_string(&file).map_err(|e| {
            Box::new(EvalAltResult::ErrorModuleNotFound(
                format!("{path} ({e})"),
                pos,
            ))
        })?;
        let mut ast = engine.compile(&text).map_err(|e| {
            Box::new(EvalAltResult::ErrorInModule(
                path.to_string(),
                Box::new(e.into()),
                pos,
            ))
        })?;
        ast.set_source(path);
        let module = Module::eval_ast_as_new(Scope::new(), &ast, engine)
            .map_err(|e| Box::new(EvalAltResult::ErrorInModule(path.to_string(), e, pos)))?;
        Ok(module.into())
    }
}
