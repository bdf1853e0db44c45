//! skalibs' `subgetopt`: POSIX getopt without GNU permutation. Options may be clustered
//! (`-wu`, `-uwd`), an option argument is the rest of the cluster or the next word
//! (`-T5000`, `-T 5000`), parsing stops at `--` or at the first word that is not an option.

use std::ffi::OsString;

#[derive(Debug, PartialEq, Eq)]
pub struct Parsed {
    /// The options in command-line order, with their argument when they take one.
    pub opts: Vec<(char, Option<String>)>,
    /// Index of the first operand in the argument list.
    pub rest: usize,
}

/// `spec` lists the accepted option letters; a letter followed by `:` takes an argument.
/// Any unknown letter or missing argument is a usage error (`Err(())`).
pub fn parse(args: &[OsString], spec: &str) -> Result<Parsed, ()> {
    let mut opts = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let word = args[i].to_string_lossy();
        if word == "--" {
            i += 1;
            break;
        }
        if !word.starts_with('-') || word == "-" {
            break;
        }
        let chars: Vec<char> = word[1..].chars().collect();
        let mut j = 0;
        while j < chars.len() {
            let c = chars[j];
            let pos = spec.find(c).filter(|_| c != ':').ok_or(())?;
            if spec[pos + c.len_utf8()..].starts_with(':') {
                let rest: String = chars[j + 1..].iter().collect();
                let arg = if !rest.is_empty() {
                    rest
                } else {
                    i += 1;
                    args.get(i).ok_or(())?.to_string_lossy().into_owned()
                };
                opts.push((c, Some(arg)));
                break;
            }
            opts.push((c, None));
            j += 1;
        }
        i += 1;
    }
    Ok(Parsed { opts, rest: i })
}

/// skalibs' `uint0_scan`: decimal digits only, the whole word.
pub fn uint(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(words: &[&str], spec: &str) -> Result<Parsed, ()> {
        parse(&words.iter().map(OsString::from).collect::<Vec<_>>(), spec)
    }

    #[test]
    fn clusters_arguments_and_the_end_of_options() {
        let r = p(&["-wu", "-T", "500", "-ud", "dir", "-k"], "udkT:w:").unwrap();
        assert_eq!(r.opts, vec![('w', Some("u".into())), ('T', Some("500".into())), ('u', None), ('d', None),]);
        assert_eq!(r.rest, 4);
        let r = p(&["-T5000", "--", "-u"], "uT:").unwrap();
        assert_eq!((r.opts, r.rest), (vec![('T', Some("5000".into()))], 2));
        assert_eq!(p(&["-", "x"], "u").unwrap().rest, 0);
        assert!(p(&["-z"], "u").is_err());
        assert!(p(&["-T"], "T:").is_err());
        assert!(p(&["-:"], "T:").is_err());
    }

    #[test]
    fn uint_is_digits_only() {
        assert_eq!(uint("5000"), Some(5000));
        for bad in ["", "-1", "+1", "1s", " 1"] {
            assert_eq!(uint(bad), None, "{bad}");
        }
    }

    /// Property tests (issue 10): any argv against any option spec. Here rather than in
    /// tests/props.rs because the `s6::getopt` module is private to the crate.
    mod props {
        use super::*;
        use proptest::prelude::*;
        use std::os::unix::ffi::OsStringExt;

        fn word() -> impl Strategy<Value = OsString> {
            prop_oneof![
                prop::sample::select(&["-", "--", "-a", "-T", "-T5", "-ab", "-:", "-é", "-\u{feff}", "x", ""][..])
                    .prop_map(OsString::from),
                prop::collection::vec(any::<u8>(), 0..6).prop_map(|mut v| {
                    v.insert(0, b'-');
                    OsString::from_vec(v)
                }),
                prop::collection::vec(any::<u8>(), 0..6).prop_map(OsString::from_vec),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 1024, failure_persistence: None, ..ProptestConfig::default() })]

            #[test]
            fn parse_is_total_and_stays_in_bounds(
                args in prop::collection::vec(word(), 0..8),
                spec in "[abT:é\u{feff}-]{0,8}",
            ) {
                if let Ok(p) = parse(&args, &spec) {
                    prop_assert!(p.rest <= args.len());
                    for (c, arg) in &p.opts {
                        let pos = spec.find(*c);
                        prop_assert!(*c != ':' && pos.is_some(), "{:?} not in {:?}", c, spec);
                        let takes = spec[pos.unwrap() + c.len_utf8()..].starts_with(':');
                        prop_assert_eq!(arg.is_some(), takes);
                    }
                }
            }

            #[test]
            fn uint_is_exactly_the_decimal_u64s(s in "[0-9+ a-]{0,24}") {
                let want = (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse::<u64>().ok()).flatten();
                prop_assert_eq!(uint(&s), want);
            }
        }

        #[test]
        fn hostile_words() {
            let w = |v: &[&[u8]]| v.iter().map(|b| OsString::from_vec(b.to_vec())).collect::<Vec<_>>();
            assert!(parse(&w(&[b"-\xff"]), "T:").is_err(), "invalid UTF-8 is no option letter");
            assert_eq!(parse(&w(&[b"-T\xff"]), "T:").unwrap().opts, vec![('T', Some("\u{fffd}".into()))]);
            assert!(parse(&w(&[b"-\0"]), "T:").is_err());
            assert_eq!(parse(&w(&[b"-T", b"\0"]), "T:").unwrap().rest, 2);
            assert_eq!(uint("18446744073709551616"), None);
            assert_eq!(uint("18446744073709551615"), Some(u64::MAX));
            assert_eq!(uint("\u{ff10}"), None, "fullwidth digits are not digits");
        }
    }
}
