//! Parser unit tests: what the parser records for small scripts.

use super::*;

fn roles(script: &str) -> Vec<(String, String)> {
    let syn = parse(script.as_bytes());
    assert!(syn.unsure.is_none(), "{script}: {:?}", syn.unsure);
    syn.sites
        .iter()
        .map(|s| {
            let mut chain = Vec::new();
            let mut sc = s.scope;
            while sc != ROOT {
                chain.push(match &syn.scopes[sc].kind {
                    ScopeKind::Word(r) => format!("{r:?}"),
                    k => format!("{k:?}"),
                });
                sc = syn.scopes[sc].parent;
            }
            (s.placeholder.display(), chain.join(" < "))
        })
        .collect()
}

#[test]
fn function_forms_put_the_body_in_command_position() {
    for s in [
        "f(){ [[ ${v} -eq 1 ]]; }; f",
        "f () { [[ ${v} -eq 1 ]]; }",
        "function f { [[ ${v} -eq 1 ]]; }",
        "function f () { [[ ${v} -eq 1 ]]; }",
        "f() [[ ${v} -eq 1 ]]",
    ] {
        let r = roles(s);
        assert_eq!(r.len(), 1, "{s}");
        assert!(r[0].1.starts_with("Cond(Arith)"), "{s}: {r:?}");
    }
}

#[test]
fn hash_after_a_process_substitution_is_part_of_the_word() {
    let syn = parse(b"cat <(echo)#'\ncat <<'EOF'\n${v}\nEOF\n'\n");
    // bash reads `#'…'` as part of the word, so the quote spans the lines: no here-document.
    assert!(syn.heredocs.is_empty(), "{:?}", syn.heredocs);
    assert_eq!(syn.sites.len(), 1);
    assert_eq!(syn.sites[0].quoting, Quoting::Single);
}

#[test]
fn unusual_constructs_are_distrusted() {
    for s in [
        "x=$(cat <<EOF\nhi\nEOF)\n",
        "cat <<A; x=$(echo\n)\nbody\nA\n",
        "echo $((echo x) | cat)",
        "coproc cat",
        "!(echo) x",
        "echo \"${x#'a'}\"",
    ] {
        let syn = parse(s.as_bytes());
        assert!(syn.unsure.is_some(), "{s}");
    }
}

#[test]
fn a_failure_inside_a_word_loop_ends_the_parse() {
    // Found by the fuzzer: `for` with a bad name used to loop forever reading no words.
    for s in [
        "for 7 in c",
        "'';for 7 in 7",
        "for 7 in c d e; do :; done",
        "case x in 7) for 8 in; esac",
    ] {
        let syn = parse(s.as_bytes());
        assert!(syn.unsure.is_some(), "{s}");
    }
}

#[test]
fn bash_5_2_comsub_reprinting_is_distrusted() {
    // Found by the fuzzer: inside $(…) bash 5.2 re-prints commands before running them.
    for s in [
        ": $( a=(); a+=(\"${v}\" \\`); printf '%s|' \"${a[@]}\" )",
        "r=$(if true; then cat <<E\naaa\nE\nfi; x=${v})",
        "r=$(cat <<E && echo ${v}\nbody\nE\n)",
        "r=$(cat <<E; echo \"a\nb\"\nbody\nE\n)",
    ] {
        let syn = parse(s.as_bytes());
        assert!(syn.unsure.is_some(), "{s}");
    }
    // A pipeline straight after the here-document is printed faithfully.
    let syn = parse(b"r=$(cat <<E | tr a b\n${v}\nE\n)");
    assert!(syn.unsure.is_none(), "{:?}", syn.unsure);
}
