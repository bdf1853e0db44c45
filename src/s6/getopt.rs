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
}
