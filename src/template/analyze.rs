//! Deciding, for every placeholder, what bash may do with its value.
//!
//! The parser gives a tree of scopes. For a placeholder, the analysis walks from its scope
//! up to the script and joins what each level implies ([`Verdict`]): a command name runs
//! the value, arithmetic and subscripts evaluate it, `declare -n` makes it a name, `eval`
//! runs it, and so on (see [`commands`](super::commands)). It also follows values into
//! variables: a value assigned to `x` (directly, by `read`, `for`, `printf -v`, `${x:=…}`,
//! `$(echo …)`, or as a function's argument) makes `x` hold the value, and every later use
//! of `x` counts for the placeholder too. That catches `x=${v}; (( x ))`.
//!
//! Attributes (`declare -i`, `-n`, `-a`) are collected from the whole script, regardless
//! of order, since a function may run before the text that precedes it. Anything the
//! analysis cannot see (code run by `eval` or `source`, aliases, attributes given to
//! computed names) makes the whole template unsure, and every placeholder is refused.
//!
//! Outside what can be followed: a value an external program transforms (`x=$(basename
//! "${v}")`), or a value written to a file and read back. The script treats those as data
//! it received, and must not evaluate them as code.

use std::collections::{BTreeMap, HashMap};

use super::commands::{self, CommandFacts, StdinUse};
use super::placeholder::ident_len;
use super::syntax::{self, CommandKind, CondRole, ParamOp, Role, ScopeId, ScopeKind, Syntax, ROOT};
use super::verdict::Verdict;

/// bash's own variables that evaluate an assigned value as arithmetic, or are numbers.
const INT_SPECIALS: &[&str] = &[
    "OPTIND",
    "OPTERR",
    "HISTCMD",
    "RANDOM",
    "SRANDOM",
    "SECONDS",
    "LINENO",
    "COLUMNS",
    "LINES",
    "HISTSIZE",
    "HISTFILESIZE",
    "TMOUT",
    "MAILCHECK",
    "FUNCNEST",
    "BASH_XTRACEFD",
    "BASHPID",
    "PPID",
    "UID",
    "EUID",
    "BASH_SUBSHELL",
    "COMP_CWORD",
    "COMP_POINT",
    "COMP_TYPE",
    "COMP_KEY",
    "EPOCHSECONDS",
    "EPOCHREALTIME",
];

/// bash's own variables whose value becomes code, or changes how bash runs code.
const CODE_SPECIALS: &[&str] = &[
    "PS0",
    "PS1",
    "PS2",
    "PS3",
    "PS4",
    "PROMPT_COMMAND",
    "BASH_ENV",
    "ENV",
    "SHELLOPTS",
    "BASHOPTS",
    "BASH_CMDS",
    "BASH_ALIASES",
    "BASH_COMPAT",
    "POSIXLY_CORRECT",
    "BASH_LOADABLES_PATH",
    "EXECIGNORE",
    "INPUTRC",
    "BASH_ARGV0",
    "BASH_ARGV",
    "BASH_ARGC",
    "FUNCNAME",
    "BASH_SOURCE",
    "BASH_LINENO",
    "BASH_REMATCH",
    "GLOBIGNORE",
    "COMPREPLY",
    "HOSTFILE",
    "MAIL",
    "MAILPATH",
    "TERMINFO",
    "TERMCAP",
];

/// Bound on the work of following standard input into `read`s (pairs × depth).
const STDIN_BUDGET: usize = 20_000_000;

#[derive(Debug, Clone, Copy, Default)]
struct Attr {
    int: bool,
    nameref: bool,
    array: bool,
    unknown: bool,
}

/// The result: the parse, and a final verdict for each placeholder site.
#[derive(Debug, Clone)]
pub(crate) struct Analysis {
    /// The parse (sites, here-documents, and why it cannot be trusted, if so).
    pub syntax: Syntax,
    /// `verdicts[i]` is for `syntax.sites[i]`.
    pub verdicts: Vec<Verdict>,
}

/// Parse and analyse a script.
pub(crate) fn analyze(script: &[u8]) -> Analysis {
    let syn = syntax::parse(script);
    let mut a = Analyzer::new(syn);
    if let Some(p) = find(script, b"__csm") {
        a.syn.distrust(
            p,
            "names starting with `__csm` are reserved for csm-agent's own use",
        );
    }
    a.run(script);
    Analysis {
        verdicts: a.site_verdicts,
        syntax: a.syn,
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

struct Analyzer {
    syn: Syntax,
    facts: Vec<Option<CommandFacts>>,
    attrs: BTreeMap<String, Attr>,
    site_verdicts: Vec<Verdict>,
    /// Per site: the variables its value is assigned to.
    site_flows: Vec<Vec<String>>,
    /// What uses of each variable's value require (joined over all uses).
    var_verdict: HashMap<String, Verdict>,
    /// Copies: the value of `from` flows into each of these.
    var_flows: HashMap<String, Vec<String>>,
}

impl Analyzer {
    fn new(syn: Syntax) -> Self {
        Analyzer {
            syn,
            facts: Vec::new(),
            attrs: BTreeMap::new(),
            site_verdicts: Vec::new(),
            site_flows: Vec::new(),
            var_verdict: HashMap::new(),
            var_flows: HashMap::new(),
        }
    }

    fn run(&mut self, script: &[u8]) {
        self.command_facts();
        self.attributes();
        self.check_scopes();
        // Each placeholder and each reference: walk up to the script.
        let n = self.syn.sites.len();
        self.site_verdicts = Vec::with_capacity(n);
        self.site_flows = Vec::with_capacity(n);
        for i in 0..n {
            let (v, flows) = self.walk(self.syn.sites[i].scope);
            self.site_verdicts.push(v);
            self.site_flows.push(flows);
        }
        for i in 0..self.syn.refs.len() {
            let mut r = self.syn.refs[i].clone();
            r.name = self.positional(&r.name, r.scope);
            self.syn.refs[i].name = r.name.clone();
            let (mut v, flows) = self.walk(r.scope);
            match r.kind {
                syntax::RefKind::Value => {}
                syntax::RefKind::Indirect => v.join(&Verdict::refuse(
                    "`${!…}`, which uses the value as a variable name",
                )),
                syntax::RefKind::Prompt => v.join(&Verdict::refuse(
                    "`${…@P}`, which runs substitutions in the value",
                )),
            }
            self.use_var(&r.name, &v);
            for f in flows {
                self.copy(&r.name, f);
            }
        }
        self.literal_arith_names(script);
        self.code_mentions();
        self.stdin();
        self.finish();
    }

    fn use_var(&mut self, name: &str, v: &Verdict) {
        self.var_verdict
            .entry(name.to_owned())
            .or_insert(Verdict::Data)
            .join(v);
    }

    fn copy(&mut self, from: &str, to: String) {
        if from != to {
            self.var_flows.entry(from.to_owned()).or_default().push(to);
        }
    }

    /// What each simple command does with its words.
    fn command_facts(&mut self) {
        let mut facts = Vec::with_capacity(self.syn.commands.len());
        for c in &self.syn.commands {
            facts.push(match &c.kind {
                CommandKind::Simple { words } if !words.is_empty() => {
                    Some(commands::effects(words, &self.syn.functions))
                }
                _ => None,
            });
        }
        for (i, f) in facts.iter().enumerate() {
            if let Some(why) = f.as_ref().and_then(|f| f.unsure.clone()) {
                let at = self.syn.commands[i].start;
                self.syn.distrust(at, why);
            }
        }
        if self
            .syn
            .functions
            .contains(&b"command_not_found_handle"[..])
        {
            self.syn.distrust(
                0,
                "it defines `command_not_found_handle`, which receives arguments of unknown commands",
            );
        }
        self.facts = facts;
    }

    /// Attributes from every declaration, array assignments, and `read -a`/`mapfile`.
    fn attributes(&mut self) {
        for f in self.facts.iter().flatten() {
            for (name, o) in &f.decls {
                if let Some(n) = name {
                    let a = self.attrs.entry(n.clone()).or_default();
                    a.int |= o.int;
                    a.nameref |= o.nameref;
                    a.array |= o.array;
                    a.unknown |= o.unknown;
                }
            }
            if let StdinUse::Assign {
                targets: Some(t),
                arrays: true,
                ..
            } = &f.stdin
            {
                for n in t {
                    self.attrs.entry(n.clone()).or_default().array = true;
                }
            }
        }
        for var in &self.syn.arrays {
            self.attrs.entry(var.clone()).or_default().array = true;
        }
    }

    /// Assignments that change how bash reads code.
    fn check_scopes(&mut self) {
        let mut bad = None;
        for s in &self.syn.scopes {
            if let ScopeKind::Word(Role::PrefixAssign { var, .. }) = &s.kind {
                if var == "POSIXLY_CORRECT" || var == "BASH_COMPAT" {
                    bad = Some((s.span.0, var.clone()));
                }
            }
        }
        for c in &self.syn.commands {
            if let CommandKind::Simple { words } = &c.kind {
                for w in words {
                    if let Some(a) = &w.assign {
                        if a.var == "POSIXLY_CORRECT" || a.var == "BASH_COMPAT" {
                            bad = Some((w.start, a.var.clone()));
                        }
                    }
                }
            }
        }
        if let Some((at, var)) = bad {
            self.syn.distrust(
                at,
                format!("it sets `{var}`, which changes how bash reads code"),
            );
        }
    }

    /// What bash does with a value assigned to `var`.
    fn assign_verdict(&self, var: &str) -> Verdict {
        if var.starts_with('@') {
            return Verdict::Data;
        }
        let a = self.attrs.get(var).copied().unwrap_or_default();
        if a.nameref {
            Verdict::refuse(format!("an assignment to `{var}`, a name reference"))
        } else if a.unknown {
            Verdict::refuse(format!(
                "an assignment to `{var}`, whose attributes are not fixed text"
            ))
        } else if a.int || INT_SPECIALS.contains(&var) {
            Verdict::integer(format!(
                "an assignment to `{var}`, which bash evaluates as arithmetic"
            ))
        } else if CODE_SPECIALS.contains(&var) {
            Verdict::refuse(format!("an assignment to bash's special variable `{var}`"))
        } else {
            Verdict::Data
        }
    }

    /// `@` (the positional parameters) as seen at `scope`: those of the innermost function
    /// around it (`@name`), or the script's (`@`). Other names are themselves.
    fn positional(&self, name: &str, scope: ScopeId) -> String {
        if name != "@" {
            return name.to_owned();
        }
        let mut s = scope;
        loop {
            if let ScopeKind::Command(c) = self.syn.scopes[s].kind {
                if let CommandKind::Function { name: Some(n) } = &self.syn.commands[c].kind {
                    return format!("@{}", String::from_utf8_lossy(n));
                }
            }
            if s == ROOT {
                return name.to_owned();
            }
            s = self.syn.scopes[s].parent;
        }
    }

    /// The command a word scope belongs to.
    fn command_of(&self, word: ScopeId) -> Option<usize> {
        match self.syn.scopes[self.syn.scopes[word].parent].kind {
            ScopeKind::Command(i) => Some(i),
            _ => None,
        }
    }

    /// Join everything from `scope` up to the script; the variables the value lands in.
    fn walk(&self, scope: ScopeId) -> (Verdict, Vec<String>) {
        let mut v = Verdict::Data;
        let mut flows = Vec::new();
        // Whether the value is (part of) the text at this level: it stops being so when it
        // is an argument of a command whose output does not carry it.
        let mut reaching = true;
        let mut s = scope;
        loop {
            match &self.syn.scopes[s].kind {
                ScopeKind::Root => break,
                ScopeKind::Command(_) | ScopeKind::ComSub => {}
                ScopeKind::ProcSub => reaching = false,
                ScopeKind::Arith(what) => v.join(&Verdict::integer(*what)),
                ScopeKind::Substring => {
                    v.join(&Verdict::integer("a substring offset or length ${name:…}"))
                }
                ScopeKind::Subscript => v.join(&Verdict::integer("an array subscript")),
                ScopeKind::ParamWord { op, var } => {
                    if *op == ParamOp::Assign {
                        match var {
                            Some(var) => {
                                v.join(&self.assign_verdict(var));
                                if reaching {
                                    flows.push(var.clone());
                                }
                            }
                            None => v.join(&Verdict::refuse("an assignment by ${…:=…}")),
                        }
                    }
                }
                ScopeKind::Word(role) => {
                    self.word_role(s, role, &mut v, &mut flows, &mut reaching);
                }
            }
            if s == ROOT {
                break;
            }
            s = self.syn.scopes[s].parent;
        }
        (v, flows)
    }

    fn word_role(
        &self,
        s: ScopeId,
        role: &Role,
        v: &mut Verdict,
        flows: &mut Vec<String>,
        reaching: &mut bool,
    ) {
        match role {
            Role::Pending => v.join(&Verdict::refuse("a word the renderer could not classify")),
            Role::CmdName => {
                v.join(&Verdict::refuse(
                    "a command name, so the value would run as a command",
                ));
                *reaching = false;
            }
            Role::Arg { cmd, index } => {
                let e = self.facts[*cmd]
                    .as_ref()
                    .and_then(|f| f.effects.get(*index));
                match e {
                    Some(e) => {
                        v.join(&e.verdict);
                        if e.declaration
                            && e.assigns.iter().any(|var| {
                                self.attrs.get(var).is_some_and(|a| a.array || a.unknown)
                            })
                        {
                            v.join(&Verdict::refuse(
                                "an assignment by a declaration builtin to an array, where bash \
                                 parses a value that starts with `(` as code",
                            ));
                        }
                        for var in &e.assigns {
                            v.join(&self.assign_verdict(var));
                            if *reaching {
                                flows.push(self.positional(var, s));
                            }
                        }
                        *reaching &= e.echoes;
                    }
                    None => v.join(&Verdict::refuse("a word the renderer could not classify")),
                }
            }
            Role::PrefixAssign { var, .. } => {
                v.join(&self.assign_verdict(var));
                if *reaching {
                    flows.push(var.clone());
                }
                *reaching = false;
            }
            Role::ArrayElem { var } => {
                v.join(&self.assign_verdict(var));
                if *reaching {
                    flows.push(var.clone());
                }
                *reaching = false;
            }
            Role::RedirTarget | Role::CaseSubject | Role::CasePattern => *reaching = false,
            Role::HereString | Role::HeredocBody => {
                // Where the standard input goes is settled in `stdin`.
                let _ = self.command_of(s);
            }
            Role::HeredocDelim => v.join(&Verdict::refuse(
                "a here-document delimiter, which bash never expands",
            )),
            Role::LoopVar => v.join(&Verdict::refuse("the name of a loop variable")),
            Role::FuncName => v.join(&Verdict::refuse("a function name")),
            Role::LoopWord { var } => {
                match var {
                    Some(var) => {
                        v.join(&self.assign_verdict(var));
                        if *reaching {
                            flows.push(var.clone());
                        }
                    }
                    None => v.join(&Verdict::refuse(
                        "a loop whose variable is not a plain name",
                    )),
                }
                *reaching = false;
            }
            Role::Cond(CondRole::Text) => *reaching = false,
            Role::Cond(CondRole::Arith) => {
                v.join(&Verdict::integer(
                    "an operand of -eq/-ne/-lt/-le/-gt/-ge in [[ … ]], which bash evaluates as arithmetic",
                ));
                *reaching = false;
            }
            Role::Cond(CondRole::Name) => {
                v.join(&Verdict::name(
                    "the operand of -v or -R in [[ … ]] (a variable name)",
                ));
                *reaching = false;
            }
            Role::Stray => v.join(&Verdict::refuse("where bash expects an operator")),
        }
    }

    /// Names in arithmetic text that is literal (`let x=y+1`, `declare -i n=m`, `[[ a -eq b ]]`,
    /// `n=m` for an integer `n`): bash evaluates their values as arithmetic too.
    fn literal_arith_names(&mut self, script: &[u8]) {
        let mut found = Vec::new();
        for (i, s) in self.syn.scopes.iter().enumerate() {
            let ScopeKind::Word(role) = &s.kind else {
                continue;
            };
            let arith = match role {
                Role::Cond(CondRole::Arith) => true,
                Role::Arg { cmd, index } => self.facts[*cmd]
                    .as_ref()
                    .and_then(|f| f.effects.get(*index))
                    .is_some_and(|e| {
                        matches!(e.verdict, Verdict::Integer(_))
                            || e.assigns
                                .iter()
                                .any(|v| matches!(self.assign_verdict(v), Verdict::Integer(_)))
                    }),
                Role::PrefixAssign { var, .. }
                | Role::ArrayElem { var }
                | Role::LoopWord { var: Some(var) } => {
                    matches!(self.assign_verdict(var), Verdict::Integer(_))
                }
                _ => false,
            };
            if arith {
                let (a, b) = s.span;
                found.extend(identifiers(&script[a.min(b)..b]));
            }
            let _ = i;
        }
        for name in found {
            self.use_var(&name, &Verdict::integer("arithmetic"));
        }
    }

    /// Variables mentioned in code strings (trap actions, `bash -c` text …) are run as code.
    fn code_mentions(&mut self) {
        let mut mentions = Vec::new();
        for (i, f) in self.facts.iter().enumerate() {
            if let Some(f) = f {
                let scope = self.syn.commands[i].scope;
                mentions.extend(f.code_mentions.iter().map(|m| self.positional(m, scope)));
            }
        }
        for m in mentions {
            self.use_var(&m, &Verdict::refuse("code that a builtin runs later"));
        }
    }

    /// Values that reach a command's standard input: here-documents, here-strings, `<
    /// <(…)`, and earlier commands of a pipeline. A shell reading them runs them as code;
    /// `read` and `mapfile` assign them.
    fn stdin(&mut self) {
        // Pipeline elements by pipeline id.
        let mut pipes: HashMap<usize, Vec<(usize, ScopeId)>> = HashMap::new();
        for c in &self.syn.commands {
            if let Some((p, j)) = c.pipe {
                pipes.entry(p).or_default().push((j, c.scope));
            }
        }
        let consumers: Vec<(usize, StdinUse)> = self
            .facts
            .iter()
            .enumerate()
            .filter_map(|(i, f)| f.as_ref().map(|f| (i, f.stdin.clone())))
            .filter(|(_, s)| *s != StdinUse::Data)
            .collect();
        if consumers.is_empty() {
            return;
        }
        let site_chains: Vec<Vec<ScopeId>> = self
            .syn
            .sites
            .iter()
            .map(|s| self.syn.chain(s.scope))
            .collect();
        let ref_chains: Vec<Vec<ScopeId>> = self
            .syn
            .refs
            .iter()
            .map(|r| self.syn.chain(r.scope))
            .collect();
        let mut mark = vec![usize::MAX; self.syn.scopes.len()];
        let mut budget = STDIN_BUDGET;
        for (k, (cmd, use_)) in consumers.into_iter().enumerate() {
            // Mark every scope whose text reaches this command's stdin.
            let mut any = false;
            let mut s = self.syn.commands[cmd].scope;
            loop {
                if let ScopeKind::Command(c) = self.syn.scopes[s].kind {
                    let com = &self.syn.commands[c];
                    for &f in &com.stdin {
                        mark[f] = k;
                        any = true;
                    }
                    if let Some((p, j)) = com.pipe {
                        for &(i, sc) in &pipes[&p] {
                            if i < j {
                                mark[sc] = k;
                                any = true;
                            }
                        }
                    }
                }
                if s == ROOT {
                    break;
                }
                s = self.syn.scopes[s].parent;
            }
            if !any {
                continue;
            }
            let cost = (site_chains.len() + ref_chains.len()) * 8;
            if cost > budget {
                let at = self.syn.commands[cmd].start;
                self.syn.distrust(
                    at,
                    "too many commands read standard input to follow every value",
                );
                return;
            }
            budget -= cost;
            let hit = |chain: &Vec<ScopeId>| chain.iter().any(|&s| mark[s] == k);
            let (verdict, targets): (Verdict, Vec<String>) = match &use_ {
                StdinUse::Data => continue,
                StdinUse::Code(why) => (
                    Verdict::refuse(format!("its value reaches standard input where {why}")),
                    Vec::new(),
                ),
                StdinUse::Assign {
                    targets: Some(t),
                    callback: false,
                    ..
                } => {
                    let mut v = Verdict::Data;
                    for t in t {
                        v.join(&self.assign_verdict(t));
                    }
                    (v, t.clone())
                }
                StdinUse::Assign { callback: true, .. } => (
                    Verdict::refuse("its value reaches `mapfile -C`, which runs a callback on it"),
                    Vec::new(),
                ),
                StdinUse::Assign { targets: None, .. } => (
                    Verdict::refuse(
                        "its value is read into a variable whose name is not fixed text",
                    ),
                    Vec::new(),
                ),
            };
            for (i, chain) in site_chains.iter().enumerate() {
                if hit(chain) {
                    self.site_verdicts[i].join(&verdict);
                    self.site_flows[i].extend(targets.iter().cloned());
                }
            }
            for (i, chain) in ref_chains.iter().enumerate() {
                if hit(chain) {
                    let name = self.syn.refs[i].name.clone();
                    self.use_var(&name, &verdict);
                    for t in &targets {
                        self.copy(&name, t.clone());
                    }
                }
            }
        }
    }

    /// Propagate what uses of variables require back to the placeholders whose values
    /// they hold.
    fn finish(&mut self) {
        let mut down: HashMap<String, Verdict> = self.var_verdict.clone();
        let edges: Vec<(String, String)> = self
            .var_flows
            .iter()
            .flat_map(|(a, bs)| bs.iter().map(move |b| (a.clone(), b.clone())))
            .collect();
        // Each variable's verdict can rise at most twice: a bounded fixpoint.
        for _ in 0..=2 * (down.len() + edges.len()).max(1) {
            let mut changed = false;
            for (a, b) in &edges {
                let vb = down.get(b).cloned().unwrap_or(Verdict::Data);
                let va = down.entry(a.clone()).or_insert(Verdict::Data);
                let before = va.clone();
                va.join(&vb);
                changed |= *va != before;
            }
            if !changed {
                break;
            }
        }
        for (i, flows) in self.site_flows.iter().enumerate() {
            for f in flows {
                if let Some(d) = down.get(f) {
                    let mut d = d.clone();
                    if let Verdict::Integer(w) | Verdict::Name(w) | Verdict::Refuse(w) = &mut d {
                        if !w.contains("which holds its value") {
                            let var = f.strip_prefix('@').map_or_else(
                                || format!("`{f}`"),
                                |func| format!("the arguments of `{func}`"),
                            );
                            *w = format!("{w} (through {var}, which holds its value)");
                        }
                    }
                    self.site_verdicts[i].join(&d);
                }
            }
        }
    }
}

/// Identifiers in arithmetic text (numbers such as `16#ff` skipped).
fn identifiers(text: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < text.len() {
        let c = text[i];
        if c.is_ascii_digit() {
            while i < text.len()
                && (text[i].is_ascii_alphanumeric() || matches!(text[i], b'#' | b'_' | b'@'))
            {
                i += 1;
            }
            continue;
        }
        if let Some(n) = ident_len(&text[i..]) {
            out.push(String::from_utf8_lossy(&text[i..i + n]).into_owned());
            i += n;
            continue;
        }
        i += 1;
    }
    out
}
