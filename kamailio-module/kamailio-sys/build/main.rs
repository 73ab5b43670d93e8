//! Generates kamailio-sys from the Kamailio source that matches the installed
//! Kamailio, with that build's own defines.
//!
//! Kamailio's struct layouts and memory API depend on its `-D` set, so the
//! defines are not guessed: Kamailio's own `make cfg` runs (in a scratch copy
//! under OUT_DIR, leaving the source untouched) with the arguments Debian's
//! `debian/rules` uses, `make printcdefs` prints the result, and the defines go
//! into a prelude header passed to bindgen and the C shim with `-include`
//! (bindgen cannot evaluate macros given with `-D`). The `module_version` and
//! `module_flags` strings are expanded from the same headers and compared with
//! `kamailio -v`, so a mismatch fails the build instead of Kamailio's start.
//!
//! Environment:
//! - `KAMAILIO_SRC`: the unpacked Kamailio source (top directory or its
//!   `src/`); default `kamailio-module/.kamailio-src/current`, which
//!   `kamailio-module/fetch-kamailio-src.sh` creates.
//! - `KAMAILIO_BIN`: the Kamailio binary to check against (default
//!   `kamailio` on PATH, then /usr/sbin and /usr/local/sbin); `skip` builds
//!   for a Kamailio that is not installed here. For one installed in a
//!   Debian root, `kamailio-module/kamailio-in-root` with `KAMAILIO_ROOT`
//!   naming the root (what `make module KAMAILIO_ROOT=DIR` sets).
//! - `KAMAILIO_CFG_ARGS`: whitespace-separated `make cfg` arguments replacing
//!   Debian's (for another distribution's build).
//! - `KAMAILIO_EXTRA_DEFINES`: whitespace-separated `NAME[=VALUE]` added to
//!   the derived defines; default `KSR_PTHREAD_MUTEX_SHARED`.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::{env, fs, io};

/// The `make cfg` arguments of Debian's `debian/rules` that reach the
/// defines (`prefix`/`cfg_target` become `CFG_DIR` and friends); the
/// package-tree paths and compiler flags there only affect `CFLAGS`.
const DEBIAN_CFG_ARGS: &[&str] = &[
    "prefix=/usr",
    "cfg_target=/etc/kamailio/",
    "FLAVOUR=kamailio",
    "group_include=kstandard",
];

/// Added by Kamailio's Makefile.defs only when libssl >= 1.1 headers are
/// present at configure time (they were for Debian's build), and not printed
/// by `make printcdefs`.
const DEFAULT_EXTRA_DEFINES: &str = "KSR_PTHREAD_MUTEX_SHARED";

const FETCH_HINT: &str = "run kamailio-module/fetch-kamailio-src.sh (apt-get source kamailio; \
     --root DIR for the Kamailio in a Debian root) or set KAMAILIO_SRC to the unpacked source \
     of the installed Kamailio";

#[derive(Debug, thiserror::Error)]
enum BuildError {
    #[error("no Kamailio source at {path} ({origin}): {FETCH_HINT}")]
    NoSource { path: PathBuf, origin: &'static str },
    #[error("could not run `{command}`")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },
    #[error("`{command}` failed with {status}:\n{stderr}")]
    Command {
        command: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("{what}: {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("`make printcdefs` printed no -D defines: {0:?}")]
    NoDefines(String),
    #[error("could not expand {0} from Kamailio's core/ver_defs.h")]
    Expand(&'static str, #[source] Option<cc::Error>),
    #[error(
        "no kamailio binary found on PATH, /usr/sbin or /usr/local/sbin; set \
         KAMAILIO_BIN=/path/to/kamailio, or KAMAILIO_BIN=skip to build for a \
         Kamailio not installed here"
    )]
    NoKamailio,
    #[error("`{0} -v` printed no `{1}` line")]
    KamailioOutput(PathBuf, &'static str),
    #[error(
        "the Kamailio source does not match the installed Kamailio: the headers at \
         {src} give {what} {ours:?} but `{bin} -v` says {theirs:?}; Kamailio would \
         refuse to load the module. {FETCH_HINT}"
    )]
    Mismatch {
        src: PathBuf,
        bin: PathBuf,
        what: &'static str,
        ours: String,
        theirs: String,
    },
    #[error("bindgen failed on build/wrapper.h")]
    Bindgen(#[source] bindgen::BindgenError),
}

fn main() {
    if let Err(err) = run() {
        let mut message = format!("kamailio-sys: {err}");
        let mut source = std::error::Error::source(&err);
        while let Some(cause) = source {
            let _ = write!(message, ": {cause}");
            source = cause.source();
        }
        eprintln!("{message}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), BuildError> {
    for var in [
        "KAMAILIO_SRC",
        "KAMAILIO_BIN",
        "KAMAILIO_ROOT",
        "KAMAILIO_CFG_ARGS",
        "KAMAILIO_EXTRA_DEFINES",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    let build_dir = manifest.join("build");
    for file in ["main.rs", "wrapper.h", "shim.h", "shim.c"] {
        println!("cargo:rerun-if-changed=build/{file}");
    }

    let src = kamailio_src(&manifest)?;
    for file in ["core/ver_defs.h", "core/sr_module.h", "Makefile.defs"] {
        println!("cargo:rerun-if-changed={}", src.join(file).display());
    }

    let mut defines = make_cfg_defines(&src, &out)?;
    let extra = env::var("KAMAILIO_EXTRA_DEFINES").unwrap_or_else(|_| DEFAULT_EXTRA_DEFINES.into());
    for def in extra.split_whitespace() {
        let define = parse_define(def);
        if !defines.iter().any(|(name, _)| *name == define.0) {
            defines.push(define);
        }
    }
    let prelude = out.join("kamailio_defs.h");
    write(&prelude, &prelude_header(&defines))?;

    let (version, flags) = expand_version(&src, &prelude, &out)?;
    check_installed(&src, &version, &flags)?;
    write(&out.join("version.rs"), &version_rs(&version, &flags))?;

    let include_args = [
        format!("-I{}", src.display()),
        format!("-I{}", build_dir.display()),
        "-include".to_owned(),
        prelude.display().to_string(),
    ];
    generate_bindings(&build_dir, &include_args, &out)?;

    cc::Build::new()
        .file(build_dir.join("shim.c"))
        .include(&src)
        .include(&build_dir)
        .flag("-include")
        .flag(prelude.to_str().expect("OUT_DIR is UTF-8"))
        .define("MOD_NAME", "\"dsfeed\"")
        // Kamailio's own headers trip -Wall/-Wextra; the shim itself is tiny.
        .warnings(false)
        .extra_warnings(false)
        .compile("dsfeed_shim");
    Ok(())
}

/// Finds Kamailio's `src/` directory from `KAMAILIO_SRC` or the default.
fn kamailio_src(manifest: &Path) -> Result<PathBuf, BuildError> {
    let (dir, origin) = match env::var_os("KAMAILIO_SRC") {
        Some(dir) => (PathBuf::from(dir), "KAMAILIO_SRC"),
        None => (
            manifest.join("../.kamailio-src/current"),
            "default location",
        ),
    };
    [dir.join("src"), dir.clone()]
        .into_iter()
        .find(|src| src.join("core/sr_module.h").is_file() && src.join("Makefile").is_file())
        .ok_or(BuildError::NoSource { path: dir, origin })
}

/// Runs Kamailio's `make cfg` in a scratch tree of symlinks (so the source
/// stays read-only) and returns what `make printcdefs` prints.
fn make_cfg_defines(src: &Path, out: &Path) -> Result<Vec<(String, String)>, BuildError> {
    let work = out.join("kamailio-cfg");
    if work.exists() {
        fs::remove_dir_all(&work).map_err(|e| io_error("cannot clear", &work, e))?;
    }
    fs::create_dir_all(&work).map_err(|e| io_error("cannot create", &work, e))?;
    let entries = fs::read_dir(src).map_err(|e| io_error("cannot list", src, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_error("cannot list", src, e))?;
        let name = entry.file_name();
        // Outputs of an earlier `make cfg` in the source itself.
        if name == OsStr::new("config.mak") || name == OsStr::new("modules.lst") {
            continue;
        }
        let link = work.join(&name);
        std::os::unix::fs::symlink(entry.path(), &link)
            .map_err(|e| io_error("cannot link", &link, e))?;
    }

    let cfg_args: Vec<String> = match env::var("KAMAILIO_CFG_ARGS") {
        Ok(args) => args.split_whitespace().map(str::to_owned).collect(),
        Err(_) => DEBIAN_CFG_ARGS.iter().map(|a| (*a).to_owned()).collect(),
    };
    let mut cfg = Command::new("make");
    cfg.arg("-C").arg(&work).arg("cfg").args(&cfg_args);
    run_command(&mut cfg)?;
    let mut print = Command::new("make");
    print.arg("-s").arg("-C").arg(&work).arg("printcdefs");
    let printed = run_command(&mut print)?;

    let defines: Vec<_> = shell_words(&printed)
        .iter()
        .filter_map(|word| word.strip_prefix("-D"))
        .map(parse_define)
        .collect();
    if defines.is_empty() {
        return Err(BuildError::NoDefines(printed));
    }
    Ok(defines)
}

/// Splits `make printcdefs` output on whitespace outside double quotes, the
/// way the shell that ran the compiler did (`-DCOMPILER="gcc 12.2.0"`).
fn shell_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in text.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                word.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// `NAME=VALUE` or `NAME` (which the compiler defines as 1).
fn parse_define(def: &str) -> (String, String) {
    match def.split_once('=') {
        Some((name, value)) => (name.to_owned(), value.to_owned()),
        None => (def.to_owned(), "1".to_owned()),
    }
}

fn prelude_header(defines: &[(String, String)]) -> String {
    let mut header = String::from(
        "/* Generated by kamailio-sys's build script from Kamailio's `make cfg`: the\n \
         * defines the installed Kamailio was compiled with. */\n",
    );
    for (name, value) in defines {
        let _ = writeln!(header, "#define {name} {value}");
    }
    header
}

/// Expands `SER_FULL_VERSION` and `SER_COMPILE_FLAGS`, the strings Kamailio's
/// loader compares with a module's `module_version` and `module_flags`.
fn expand_version(src: &Path, prelude: &Path, out: &Path) -> Result<(String, String), BuildError> {
    let probe = out.join("version_probe.c");
    write(
        &probe,
        "#include \"core/ver_defs.h\"\n\
         dsfeed_full_version = SER_FULL_VERSION;\n\
         dsfeed_compile_flags = SER_COMPILE_FLAGS;\n",
    )?;
    let expanded = cc::Build::new()
        .file(&probe)
        .include(src)
        .flag("-include")
        .flag(prelude.to_str().expect("OUT_DIR is UTF-8"))
        .cargo_metadata(false)
        .try_expand()
        .map_err(|e| BuildError::Expand("the version strings", Some(e)))?;
    let expanded = String::from_utf8_lossy(&expanded);
    let version = string_after(&expanded, "dsfeed_full_version")
        .ok_or(BuildError::Expand("SER_FULL_VERSION", None))?;
    let flags = string_after(&expanded, "dsfeed_compile_flags")
        .ok_or(BuildError::Expand("SER_COMPILE_FLAGS", None))?;
    Ok((version, flags))
}

/// Concatenates the C string literals between `name =` and the next `;`.
fn string_after(text: &str, name: &str) -> Option<String> {
    let start = text.find(&format!("{name} ="))? + name.len() + 2;
    let rest = &text[start..];
    let mut value = String::new();
    let mut chars = rest.chars();
    let mut in_literal = false;
    while let Some(c) = chars.next() {
        match (in_literal, c) {
            (false, ';') => return Some(value),
            (false, '"') | (true, '"') => in_literal = !in_literal,
            (true, '\\') => value.push(chars.next()?),
            (true, c) => value.push(c),
            (false, _) => {}
        }
    }
    None
}

/// Compares the expanded strings with what the installed `kamailio -v` says.
fn check_installed(src: &Path, version: &str, flags: &str) -> Result<(), BuildError> {
    let bin = match env::var_os("KAMAILIO_BIN") {
        Some(bin) if bin == "skip" => {
            println!(
                "cargo:warning=KAMAILIO_BIN=skip: {version:?} not checked against a kamailio binary"
            );
            return Ok(());
        }
        Some(bin) => PathBuf::from(bin),
        None => find_kamailio().ok_or(BuildError::NoKamailio)?,
    };
    println!("cargo:rerun-if-changed={}", bin.display());
    let printed = run_command(Command::new(&bin).arg("-v"))?;
    let line = |prefix: &'static str| {
        printed
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .map(|v| v.trim().to_owned())
            .ok_or_else(|| BuildError::KamailioOutput(bin.clone(), prefix))
    };
    for (what, ours, theirs) in [
        ("module_version", version, line("version: ")?),
        ("module_flags", flags, line("flags: ")?),
    ] {
        if ours != theirs {
            return Err(BuildError::Mismatch {
                src: src.to_owned(),
                bin,
                what,
                ours: ours.to_owned(),
                theirs,
            });
        }
    }
    Ok(())
}

fn find_kamailio() -> Option<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .map(|dir| dir.join("kamailio"))
        .find(|bin| bin.is_file())
}

fn version_rs(version: &str, flags: &str) -> String {
    format!(
        "/// `SER_FULL_VERSION` of the Kamailio these bindings were generated for;\n\
         /// a module exports it as `module_version`.\n\
         pub const SER_FULL_VERSION: &::core::ffi::CStr = c{version:?};\n\
         /// `SER_COMPILE_FLAGS` of that build (the `flags:` line of `kamailio -v`);\n\
         /// a module exports it as `module_flags`.\n\
         pub const SER_COMPILE_FLAGS: &::core::ffi::CStr = c{flags:?};\n"
    )
}

/// Runs bindgen over `wrapper.h`, allowlisting only what dsfeed.so uses (a
/// full run collides on `IPPORT_RESERVED` and is slow).
fn generate_bindings(
    build_dir: &Path,
    include_args: &[String],
    out: &Path,
) -> Result<(), BuildError> {
    let bindings = bindgen::Builder::default()
        .header(build_dir.join("wrapper.h").to_str().expect("path is UTF-8"))
        .clang_args(include_args)
        .use_core()
        .rust_edition(bindgen::RustEdition::Edition2024)
        .allowlist_function(
            "register_procs|cfg_register_child|cfg_child_init|fork_process|\
             find_module_by_name|dsfeed_.*",
        )
        .allowlist_type(
            "module_exports_t|cmd_export_t|param_export_t|rpc_export_t|rpc_t|\
             modparam_t|param_func_t|ds_set_t|ds_dest_t|ds_load_list_f|ds_get_list_f|\
             gen_lock_t|sr_module_t",
        )
        .allowlist_var(
            "PROC_MAIN|PROC_NOCHLDINIT|PARAM_STRING|PARAM_INT|DSFEED_PARAM_USE_FUNC|\
             L_ALERT|L_BUG|L_CRIT|L_ERR|L_WARN|L_NOTICE|L_INFO|L_DBG|DS_.*_DST",
        )
        .derive_default(true)
        .generate_comments(false)
        .generate()
        .map_err(BuildError::Bindgen)?;
    let path = out.join("bindings.rs");
    bindings
        .write_to_file(&path)
        .map_err(|e| io_error("cannot write", &path, e))
}

fn run_command(command: &mut Command) -> Result<String, BuildError> {
    let shown = format!("{command:?}");
    let output = command.output().map_err(|source| BuildError::Spawn {
        command: shown.clone(),
        source,
    })?;
    if !output.status.success() {
        return Err(BuildError::Command {
            command: shown,
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn write(path: &Path, text: &str) -> Result<(), BuildError> {
    fs::write(path, text).map_err(|e| io_error("cannot write", path, e))
}

fn io_error(what: &'static str, path: &Path, source: io::Error) -> BuildError {
    BuildError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}
