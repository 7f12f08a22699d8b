//! What commands do with their arguments: the table the analysis consults.
//!
//! For every simple command, [`effects`] decides, per argument, whether bash (or the
//! program) treats a value there as data, as arithmetic, as a variable name, or as code;
//! whether the argument's value reaches the command's output (so that it can be captured by
//! `$(…)` into a variable); and which variables the command assigns from it.
//!
//! Unknown programs take their arguments as data: what a program does with an argument is
//! its own business, as with any argument. Programs that run their arguments or their
//! standard input as shell code (shells, `su`, `ssh`, `xargs`, interpreters reading
//! programs from stdin …) are refused.

use super::syntax::WordInfo;
use super::verdict::Verdict;

/// Shells and programs that run an argument or their standard input as code.
const CODE_RUNNERS: &[&[u8]] = &[
    b"bash",
    b"sh",
    b"dash",
    b"zsh",
    b"ksh",
    b"mksh",
    b"ash",
    b"busybox",
    b"fish",
    b"csh",
    b"tcsh",
    b"pwsh",
    b"rbash",
    b"su",
    b"sudo",
    b"doas",
    b"runuser",
    b"ssh",
    b"xargs",
    b"timeout",
    b"nice",
    b"setsid",
    b"stdbuf",
    b"chroot",
    b"flock",
    b"ionice",
    b"taskset",
    b"unshare",
    b"nsenter",
    b"watch",
    b"script",
    b"strace",
    b"ltrace",
    b"parallel",
    b"sg",
    b"newgrp",
    b"at",
    b"batch",
    b"python",
    b"python2",
    b"python3",
    b"perl",
    b"ruby",
    b"node",
    b"nodejs",
    b"php",
    b"lua",
    b"tclsh",
    b"expect",
    b"osascript",
    b"systemd-run",
];

/// Builtins whose arguments are code or are evaluated again.
const CODE_BUILTINS: &[&[u8]] = &[
    b"eval",
    b"source",
    b".",
    b"trap",
    b"alias",
    b"unalias",
    b"complete",
    b"compgen",
    b"compopt",
    b"enable",
    b"bind",
    b"fc",
    b"hash",
    b"coproc",
];

/// Builtins that only read or print their arguments as text.
const TEXT_BUILTINS: &[&[u8]] = &[
    b":",
    b"true",
    b"false",
    b"cd",
    b"pushd",
    b"popd",
    b"dirs",
    b"pwd",
    b"type",
    b"kill",
    b"ulimit",
    b"umask",
    b"shift",
    b"return",
    b"exit",
    b"break",
    b"continue",
    b"jobs",
    b"fg",
    b"bg",
    b"disown",
    b"times",
    b"help",
    b"logout",
    b"suspend",
    b"caller",
    b"history",
    b"wait",
    b"logger",
];

/// The declaration builtins.
pub(crate) const DECLARATION: &[&[u8]] = super::syntax::DECLARATION;

/// What a command does with one argument.
#[derive(Debug, Clone)]
pub(crate) struct Effect {
    /// What bash or the program may do with a value there.
    pub verdict: Verdict,
    /// The argument's value reaches the command's standard output.
    pub echoes: bool,
    /// Variables the argument's value is assigned to.
    pub assigns: Vec<String>,
    /// Assigned by a declaration builtin without `=(…)`: if the variable is an array, bash
    /// parses a value that starts with `(` as a compound assignment, running its code.
    pub declaration: bool,
}

impl Effect {
    fn data() -> Effect {
        Effect {
            verdict: Verdict::Data,
            echoes: false,
            assigns: Vec::new(),
            declaration: false,
        }
    }
}

/// How a command uses its standard input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StdinUse {
    /// As data (or not at all).
    Data,
    /// As code: a shell, `source /dev/stdin`, an interpreter.
    Code(String),
    /// Read into variables (`read`, `mapfile`, `readarray`).
    Assign {
        /// The targets; `None` when a target's name is not fixed text.
        targets: Option<Vec<String>>,
        /// Arrays among the targets (`read -a`, `mapfile`).
        arrays: bool,
        /// `mapfile -C`: a callback runs for each line.
        callback: bool,
    },
}

/// A declaration's options.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct DeclOpts {
    /// `-i`.
    pub int: bool,
    /// `-n`.
    pub nameref: bool,
    /// `-a` or `-A`.
    pub array: bool,
    /// `-f`, `-F`, `-p`: arguments are names, nothing is assigned.
    pub names_only: bool,
    /// An option word was not fixed text: anything is possible.
    pub unknown: bool,
}

/// What the analysis learns from one simple command.
#[derive(Debug, Clone)]
pub(crate) struct CommandFacts {
    /// One effect per word after the name (`words[1..]`).
    pub effects: Vec<Effect>,
    /// How it uses stdin.
    pub stdin: StdinUse,
    /// Declarations it makes: (names, options). `None` name: not fixed text.
    pub decls: Vec<(Option<String>, DeclOpts)>,
    /// Why the whole template cannot be vouched for, if this command makes it so.
    pub unsure: Option<String>,
    /// Variable names mentioned in code strings it runs (trap actions …): each is used as
    /// code.
    pub code_mentions: Vec<String>,
}

fn base_name(lit: &[u8]) -> &[u8] {
    match lit.iter().rposition(|&c| c == b'/') {
        Some(i) => &lit[i + 1..],
        None => lit,
    }
}

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Decide what the simple command with `words` (`words[0]` is its name) does. `functions`
/// are the names the script defines.
pub(crate) fn effects(
    words: &[WordInfo],
    functions: &std::collections::BTreeSet<Vec<u8>>,
) -> CommandFacts {
    let n = words.len().saturating_sub(1);
    let mut facts = CommandFacts {
        effects: vec![Effect::data(); n],
        stdin: StdinUse::Data,
        decls: Vec::new(),
        unsure: None,
        code_mentions: Vec::new(),
    };
    if words.is_empty() {
        return facts;
    }
    let mut i = 0; // index of the current command name in `words`
    let mut skip_functions = false;
    loop {
        let Some(lit) = words[i].lit.as_deref() else {
            // `$cmd args`: the command could be anything, `eval` included.
            for e in facts.effects.iter_mut().skip(i) {
                e.verdict = Verdict::refuse(
                    "an argument of a command whose name is not fixed text (it could be `eval`)",
                );
            }
            facts.stdin = StdinUse::Code("a command whose name is not fixed text".into());
            return facts;
        };
        let name = base_name(lit);
        let args = &words[i + 1..];
        // Effects index of `words[i + 1 + k]` is `i + k`.
        let off = i;
        if !skip_functions && functions.contains(lit) {
            // A function the script defines: its arguments become its $1, $2, ….
            let positional = format!("@{}", show(lit));
            for e in facts.effects.iter_mut().skip(off) {
                e.assigns.push(positional.clone());
            }
            return facts;
        }
        match name {
            b"command" => {
                let mut k = 0;
                let mut lookup = false;
                while let Some(w) = args.get(k) {
                    match w.lit.as_deref() {
                        Some(b"-p") => {}
                        Some(b"-v" | b"-V") => lookup = true,
                        Some(b"--") => {
                            k += 1;
                            break;
                        }
                        Some(o) if o.starts_with(b"-") => {}
                        _ => break,
                    }
                    k += 1;
                }
                if lookup || k >= args.len() {
                    return facts;
                }
                facts.effects[off + k].verdict = Verdict::refuse("a command name");
                i += 1 + k;
                skip_functions = true;
                continue;
            }
            b"builtin" => {
                if args.is_empty() {
                    return facts;
                }
                facts.effects[off].verdict = Verdict::refuse("a command name");
                i += 1;
                skip_functions = true;
                continue;
            }
            b"exec" => {
                let mut k = 0;
                while let Some(w) = args.get(k) {
                    match w.lit.as_deref() {
                        Some(b"-a") => k += 1,
                        Some(b"--") => {
                            k += 1;
                            break;
                        }
                        Some(o) if o.starts_with(b"-") && o.len() > 1 => {}
                        _ => break,
                    }
                    k += 1;
                }
                if k >= args.len() {
                    return facts;
                }
                facts.effects[off + k].verdict = Verdict::refuse("a command name");
                i += 1 + k;
                continue;
            }
            b"nohup" | b"time" => {
                if args.is_empty() {
                    return facts;
                }
                facts.effects[off].verdict = Verdict::refuse("a command name");
                i += 1;
                continue;
            }
            b"env" => {
                let mut k = 0;
                while let Some(w) = args.get(k) {
                    match w.lit.as_deref() {
                        Some(b"-i" | b"-0" | b"--ignore-environment" | b"--null") => {}
                        Some(b"-u") => k += 1,
                        Some(b"--") => {
                            k += 1;
                            break;
                        }
                        Some(o) if o.starts_with(b"--unset=") => {}
                        Some(o) if o.starts_with(b"-") => {
                            for e in facts.effects.iter_mut().skip(off + k) {
                                e.verdict = Verdict::refuse("an argument of `env` after an option the renderer does not model");
                            }
                            return facts;
                        }
                        _ => break,
                    }
                    k += 1;
                }
                // NAME=VALUE words set the program's environment: data.
                while let Some(w) = args.get(k) {
                    if w.assign.is_some() {
                        k += 1;
                    } else {
                        break;
                    }
                }
                if k >= args.len() {
                    return facts;
                }
                facts.effects[off + k].verdict = Verdict::refuse("a command name");
                i += 1 + k;
                continue;
            }
            _ => {}
        }
        // `i` is the real command now.
        let rest = &mut facts.effects[off..];
        if CODE_RUNNERS.contains(&name) {
            let why = format!("an argument of `{}`, which can run it as code", show(name));
            for e in rest.iter_mut() {
                e.verdict = Verdict::refuse(&why);
            }
            facts.stdin = StdinUse::Code(format!("`{}` reads it as code", show(name)));
            return facts;
        }
        if CODE_BUILTINS.contains(&name) {
            let why = format!(
                "an argument of `{}`, which evaluates it as code",
                show(name)
            );
            for e in rest.iter_mut() {
                e.verdict = Verdict::refuse(&why);
            }
            for w in args {
                if let Some(l) = &w.lit {
                    facts.code_mentions.extend(mentions(l));
                }
            }
            facts.stdin = StdinUse::Code(format!("`{}` may run it as code", show(name)));
            if matches!(
                name,
                b"eval" | b"source" | b"." | b"alias" | b"enable" | b"bind"
            ) {
                facts.unsure = Some(format!(
                    "it uses `{}`, which can run code or change how bash reads code the renderer cannot see",
                    show(name)
                ));
            }
            return facts;
        }
        if DECLARATION.contains(&name) {
            declaration(name, args, rest, &mut facts.decls, &mut facts.unsure);
            return facts;
        }
        match name {
            b"echo" => {
                for e in rest.iter_mut() {
                    e.echoes = true;
                }
            }
            b"printf" => printf(args, rest),
            b"let" => {
                for e in rest.iter_mut() {
                    e.verdict = Verdict::integer("an argument of `let`");
                }
            }
            b"read" => facts.stdin = read(args, rest),
            b"mapfile" | b"readarray" => {
                facts.stdin = mapfile(args, rest);
                // The callback's own text runs as code: the variables it names are code.
                for (w, e) in args.iter().zip(rest.iter()) {
                    if let (Some(l), Verdict::Refuse(_)) = (&w.lit, &e.verdict) {
                        facts.code_mentions.extend(mentions(l));
                    }
                }
            }
            b"getopts" => getopts(args, rest),
            b"unset" => {
                for e in rest.iter_mut() {
                    e.verdict = Verdict::refuse("an argument of `unset` (a variable name)");
                }
            }
            b"test" | b"[" => test(args, rest),
            b"set" => set(args, rest, &mut facts.unsure),
            b"shopt" => {
                for (w, e) in args.iter().zip(rest.iter_mut()) {
                    e.verdict = Verdict::refuse("an argument of `shopt` (an option name)");
                    match w.lit.as_deref() {
                        Some(
                            b"expand_aliases" | b"compat31" | b"compat32" | b"compat40"
                            | b"compat41" | b"compat42" | b"compat43" | b"compat44" | b"extdebug",
                        ) => {
                            facts.unsure = Some(
                                "it turns on a `shopt` option that changes how bash reads code"
                                    .into(),
                            );
                        }
                        None => {
                            facts.unsure =
                                Some("it sets `shopt` options that are not fixed text".into());
                        }
                        _ => {}
                    }
                }
            }
            b"wait" => {
                let mut k = 0;
                while k < args.len() {
                    if args[k].lit.as_deref() == Some(b"-p") && k + 1 < args.len() {
                        rest[k + 1].verdict =
                            Verdict::refuse("an argument of `wait -p` (a variable name)");
                        k += 1;
                    }
                    k += 1;
                }
            }
            _ if TEXT_BUILTINS.contains(&name) => {}
            _ => {}
        }
        return facts;
    }
}

/// Variable names mentioned as `$name` or `${name` in code text.
fn mentions(code: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < code.len() {
        if code[i] == b'$' {
            let mut j = i + 1;
            if code.get(j) == Some(&b'{') {
                j += 1;
                if matches!(code.get(j), Some(b'!' | b'#')) {
                    j += 1;
                }
            }
            if let Some(n) = super::placeholder::ident_len(&code[j..]) {
                out.push(show(&code[j..j + n]));
                i = j + n;
                continue;
            }
            if code
                .get(j)
                .is_some_and(|c| c.is_ascii_digit() || matches!(c, b'@' | b'*'))
            {
                out.push("@".into());
            }
        }
        i += 1;
    }
    out
}

/// Options of a declaration builtin, then its names and assignments.
fn declaration(
    name: &[u8],
    args: &[WordInfo],
    rest: &mut [Effect],
    decls: &mut Vec<(Option<String>, DeclOpts)>,
    unsure: &mut Option<String>,
) {
    let mut opts = DeclOpts::default();
    let mut k = 0;
    while let Some(w) = args.get(k) {
        match w.lit.as_deref() {
            Some(b"--") => {
                k += 1;
                break;
            }
            Some(o)
                if (o.starts_with(b"-") || o.starts_with(b"+"))
                    && o.len() > 1
                    && w.assign.is_none() =>
            {
                let on = o[0] == b'-';
                for &c in &o[1..] {
                    match c {
                        b'i' if on => opts.int = true,
                        b'n' if on && name != b"export" => opts.nameref = true,
                        b'a' | b'A' if on => opts.array = true,
                        b'f' | b'F' | b'p' => opts.names_only = true,
                        _ => {}
                    }
                }
                rest[k].verdict = Verdict::refuse(format!("an option of `{}`", show(name)));
            }
            Some(_) => break,
            None if w.assign.is_some() => break,
            None => {
                // `declare $opts x`: the word may be options, names or assignments.
                opts.unknown = true;
                rest[k].verdict = Verdict::refuse(format!(
                    "an argument of `{}` that may be an option",
                    show(name)
                ));
            }
        }
        k += 1;
    }
    for (w, e) in args.iter().zip(rest.iter_mut()).skip(k) {
        match &w.assign {
            Some(a) if !opts.names_only => {
                decls.push((Some(a.var.clone()), opts));
                e.assigns.push(a.var.clone());
                e.declaration = !a.compound;
                e.verdict = if opts.unknown {
                    Verdict::refuse(format!(
                        "an assignment by `{}` whose options are not fixed text",
                        show(name)
                    ))
                } else if opts.nameref {
                    Verdict::refuse(format!(
                        "an assignment by `{} -n` (a name reference)",
                        show(name)
                    ))
                } else if opts.int {
                    Verdict::integer(format!("an assignment by `{} -i` (declare -i)", show(name)))
                } else if opts.array && !a.compound {
                    Verdict::refuse(format!(
                        "an array assignment by `{}`, where bash parses a value that starts with `(` as code",
                        show(name)
                    ))
                } else {
                    // Attributes declared elsewhere are applied by the analysis.
                    Verdict::Data
                };
            }
            _ => {
                e.verdict =
                    Verdict::refuse(format!("an argument of `{}` (a variable name)", show(name)));
                match &w.lit {
                    Some(l) if super::placeholder::is_ident(l) => {
                        decls.push((Some(show(l)), opts));
                    }
                    Some(_) => {}
                    None => {
                        decls.push((None, opts));
                        if opts.int || opts.nameref || opts.unknown || opts.array {
                            *unsure = Some(format!(
                                "`{}` gives attributes to a variable whose name is not fixed text",
                                show(name)
                            ));
                        }
                    }
                }
            }
        }
    }
}

fn printf(args: &[WordInfo], rest: &mut [Effect]) {
    let mut k = 0;
    let mut target: Option<Option<String>> = None;
    while let Some(w) = args.get(k) {
        match w.lit.as_deref() {
            Some(b"-v") if k + 1 < args.len() => {
                rest[k + 1].verdict = Verdict::refuse("the variable name of `printf -v`");
                target = Some(args[k + 1].lit.as_deref().and_then(|l| {
                    let n = super::placeholder::ident_len(l)?;
                    (n == l.len() || l[n] == b'[').then(|| show(&l[..n]))
                }));
                k += 2;
            }
            Some(b"--") => {
                k += 1;
                break;
            }
            _ => break,
        }
    }
    for e in rest.iter_mut().skip(k) {
        match &target {
            None => e.echoes = true,
            Some(Some(v)) => e.assigns.push(v.clone()),
            Some(None) => {
                e.verdict = Verdict::refuse(
                    "an argument of `printf -v` into a variable whose name is not fixed text",
                );
            }
        }
    }
}

/// Option letters that take an argument, for `read` and `mapfile`.
fn options<'w>(
    args: &'w [WordInfo],
    with_arg: &[u8],
    mut on: impl FnMut(u8, Option<&'w WordInfo>, usize),
) -> Option<usize> {
    let mut k = 0;
    while let Some(w) = args.get(k) {
        let Some(l) = w.lit.as_deref() else {
            if w.expands && k < args.len() {
                return None;
            }
            break;
        };
        if l == b"--" {
            return Some(k + 1);
        }
        if !(l.starts_with(b"-") && l.len() > 1) {
            break;
        }
        let mut j = 1;
        while j < l.len() {
            let c = l[j];
            if with_arg.contains(&c) {
                if j + 1 < l.len() {
                    on(c, None, k);
                } else {
                    on(c, args.get(k + 1), k + 1);
                    k += 1;
                }
                break;
            }
            on(c, None, k);
            j += 1;
        }
        k += 1;
    }
    Some(k)
}

fn read(args: &[WordInfo], rest: &mut [Effect]) -> StdinUse {
    let mut array: Option<Option<String>> = None;
    let mut name_words = Vec::new();
    let mut arr_word = None;
    let end = options(args, b"adinNptu", |c, w, k| {
        if c == b'a' {
            array = Some(w.and_then(|w| {
                w.lit
                    .as_deref()
                    .filter(|l| super::placeholder::is_ident(l))
                    .map(show)
            }));
            arr_word = Some(k);
        }
    });
    if let Some(k) = arr_word {
        if k < rest.len() {
            rest[k].verdict = Verdict::refuse("the array name of `read -a`");
        }
    }
    let Some(end) = end else {
        for e in rest.iter_mut() {
            e.verdict = Verdict::refuse("an argument of `read` whose options are not fixed text");
        }
        return StdinUse::Assign {
            targets: None,
            arrays: true,
            callback: false,
        };
    };
    let is_array = array.is_some();
    let mut targets = Some(Vec::new());
    for (w, e) in args.iter().zip(rest.iter_mut()).skip(end) {
        e.verdict = Verdict::refuse("an argument of `read` (a variable name)");
        match w.lit.as_deref() {
            Some(l) if super::placeholder::is_ident(l) => name_words.push(show(l)),
            _ => targets = None,
        }
    }
    if let Some(t) = targets.as_mut() {
        match array {
            Some(Some(a)) => t.push(a),
            Some(None) => targets = None,
            None => {}
        }
    }
    if let Some(t) = targets.as_mut() {
        if t.is_empty() && name_words.is_empty() {
            t.push("REPLY".into());
        }
        t.extend(name_words);
    }
    StdinUse::Assign {
        targets,
        arrays: is_array,
        callback: false,
    }
}

fn mapfile(args: &[WordInfo], rest: &mut [Effect]) -> StdinUse {
    let mut callback = false;
    let mut callback_word = None;
    let end = options(args, b"dnOsuCc", |c, _, k| {
        if c == b'C' {
            callback = true;
            callback_word = Some(k);
        }
    });
    if let Some(k) = callback_word {
        if let Some(e) = rest.get_mut(k) {
            e.verdict = Verdict::refuse("the callback of `mapfile -C`, which runs as code");
        }
    }
    let Some(end) = end else {
        for e in rest.iter_mut() {
            e.verdict =
                Verdict::refuse("an argument of `mapfile` whose options are not fixed text");
        }
        return StdinUse::Assign {
            targets: None,
            arrays: true,
            callback: true,
        };
    };
    let mut targets = Some(vec![]);
    for (w, e) in args.iter().zip(rest.iter_mut()).skip(end) {
        e.verdict = Verdict::refuse("an argument of `mapfile` (a variable name)");
        match w.lit.as_deref() {
            Some(l) if super::placeholder::is_ident(l) => {
                if let Some(t) = targets.as_mut() {
                    t.push(show(l));
                }
            }
            _ => targets = None,
        }
    }
    if let Some(t) = targets.as_mut() {
        if t.is_empty() {
            t.push("MAPFILE".into());
        }
    }
    StdinUse::Assign {
        targets,
        arrays: true,
        callback,
    }
}

fn getopts(args: &[WordInfo], rest: &mut [Effect]) {
    if args.len() < 2 {
        return;
    }
    rest[1].verdict = Verdict::refuse("the variable name of `getopts`");
    let name = args[1]
        .lit
        .as_deref()
        .filter(|l| super::placeholder::is_ident(l))
        .map(show);
    for e in rest.iter_mut().skip(2) {
        match &name {
            Some(n) => {
                e.assigns.push(n.clone());
                e.assigns.push("OPTARG".into());
            }
            None => {
                e.verdict = Verdict::refuse(
                    "an argument of `getopts` into a variable whose name is not fixed text",
                )
            }
        }
    }
}

/// `test`/`[`: a word bash could read as the operand of `-v` (a variable name, whose
/// subscript it evaluates) when the word before it is `-v`, `-R`, or could expand to them.
fn test(args: &[WordInfo], rest: &mut [Effect]) {
    for k in 1..args.len() {
        let prev = &args[k - 1];
        let risky = match prev.lit.as_deref() {
            Some(b"-v" | b"-R") => true,
            Some(_) => false,
            None => prev.expands,
        };
        if risky {
            rest[k].verdict = Verdict::name("an operand `test` may read as a variable name (`-v`)");
        }
    }
}

fn set(args: &[WordInfo], rest: &mut [Effect], unsure: &mut Option<String>) {
    let mut after_dashes = false;
    for (k, w) in args.iter().enumerate() {
        if after_dashes {
            rest[k].assigns.push("@".into());
            continue;
        }
        match w.lit.as_deref() {
            Some(b"--") => after_dashes = true,
            Some(b"posix") if k > 0 && args[k - 1].lit.as_deref() == Some(b"-o") => {
                *unsure = Some("it turns on POSIX mode, which changes how bash reads code".into());
            }
            Some(l) if l.starts_with(b"-") || l.starts_with(b"+") => {
                rest[k].verdict = Verdict::refuse("an option of `set`");
            }
            Some(_) => {
                // `set a b`: the positional parameters.
                after_dashes = true;
                rest[k].assigns.push("@".into());
            }
            None => {
                rest[k].verdict = Verdict::refuse("an argument of `set` that may be an option");
                if !w.has_site {
                    *unsure = Some("it runs `set` with options that are not fixed text".into());
                }
            }
        }
    }
}
