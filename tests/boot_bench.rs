//! Boot timings (a benchmark, not a test: it asserts nothing about time). Run it with
//!
//! ```sh
//! cargo test --release --test boot_bench -- --ignored --nocapture
//! ```
//!
//! It builds a `HERMES_HOME` of 100,000 files (1,000 directories of 100 files, spread over the
//! hermes subtrees) and measures, on the same tree in the same run:
//! - the whole boot (`boot::run_with`, every step, until the readiness line is written) on an
//!   empty volume, on the 100,000-file volume with everything right, and with 1% root-owned;
//! - the ownership sweep alone (`HERMESINIT_SKIP` = every other step), same three cases;
//! - the shell approach of upstream's stage2-hook on the same subtrees: the warm-path check
//!   `find … \( ! -user … -o ! -group … \) -print -quit`, then `find … -exec chown -h {} +`
//!   and `chown -R` on the 1% case.
//!
//! The measurements alternate with the shell ones as listed; on a shared, loaded machine compare
//! numbers of one run only. Each number is the median of `BENCH_RUNS` (default 5) runs, page
//! cache warm. Needs root
//! (to chown); the volume lives under `BENCH_DIR` (default: the temp dir).

mod boot_common;

use boot_common::*;
use hermesinit::boot::{self, Context, Paths};
use hermesinit::config::Config;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const SUBTREES: &[&str] = &["sessions", "skills", "profiles/p", "workspace", "memories"];
const H: (u32, u32) = (10000, 10000);

struct Bench {
    _t: TempDir,
    root: PathBuf,
    cfg: Config,
    paths: Paths,
    files: Vec<PathBuf>,
}

impl Bench {
    fn new() -> Bench {
        let t = match std::env::var_os("BENCH_DIR") {
            Some(d) => {
                let p = PathBuf::from(d).join(format!("hi-boot-bench-{}", std::process::id()));
                std::fs::create_dir_all(&p).unwrap();
                TempDir(p)
            }
            None => TempDir::new("bench"),
        };
        let root = t.path().to_path_buf();
        std::fs::write(root.join("passwd"), PASSWD).unwrap();
        std::fs::write(root.join("group"), GROUP).unwrap();
        std::fs::create_dir_all(root.join("defaults")).unwrap();
        std::fs::write(root.join("defaults/SOUL.md"), "You are Hermes.\n").unwrap();
        let cfg = Config {
            hermes_home: root.join("data"),
            scan_dir: root.join("run/service"),
            env_dir: root.join("run/s6/container_environment"),
            cont_init_dir: root.join("cont-init.d"),
            ..Config::default()
        };
        let paths = Paths {
            passwd: root.join("passwd"),
            group: root.join("group"),
            s6_basedir: root.join("run/s6/basedir"),
            defaults_dir: root.join("defaults"),
            migrate_proof: root.join("migrate-proof"),
            migrate_memo_dir: root.join("var/lib/hermesinit"),
        };
        Bench { _t: t, root, cfg, paths, files: Vec::new() }
    }

    fn home(&self) -> &Path {
        &self.cfg.hermes_home
    }

    fn build_volume(&mut self, dirs: usize, per_dir: usize) {
        for i in 0..dirs {
            let sub = SUBTREES[i % SUBTREES.len()];
            let sub = if sub == "profiles/p" { format!("profiles/p{}/sessions", i % 10) } else { sub.to_string() };
            let d = self.home().join(sub).join(format!("d{i:04}"));
            std::fs::create_dir_all(&d).unwrap();
            for j in 0..per_dir {
                let f = d.join(format!("f{j:03}.json"));
                std::fs::write(&f, b"{}").unwrap();
                self.files.push(f);
            }
        }
        for p in walk(self.home()) {
            lchown(&p, H);
        }
    }

    /// Every 100th file root-owned, as an old root `docker exec` left them.
    fn break_one_percent(&self) -> usize {
        let mut n = 0;
        for f in self.files.iter().step_by(100) {
            lchown(f, (0, 0));
            n += 1;
        }
        n
    }

    fn boot(&self, skip: &str) -> f64 {
        self.boot_threads(skip, None)
    }

    fn boot_threads(&self, skip: &str, threads: Option<&str>) -> f64 {
        let mut env: Vec<(OsString, OsString)> =
            std::env::vars_os().filter(|(k, _)| !k.to_string_lossy().starts_with("HERMES")).collect();
        env.push(("HERMESINIT_SKIP".into(), skip.into()));
        if let Some(n) = threads {
            env.push(("HERMESINIT_SWEEP_THREADS".into(), n.into()));
        }
        let args: Vec<String> = Vec::new();
        let t = Instant::now();
        boot::run_with(&Context { config: &self.cfg, main_args: &args }, &self.paths, env).expect("boot");
        t.elapsed().as_secs_f64() * 1000.0
    }

    fn shell(&self, script: &str) -> f64 {
        let t = Instant::now();
        let st = Command::new("sh").arg("-c").arg(script).current_dir(self.home()).status().unwrap();
        assert!(st.success() || script.contains("-quit"), "{script}");
        t.elapsed().as_secs_f64() * 1000.0
    }

    fn subtrees(&self) -> String {
        ["sessions", "skills", "profiles", "workspace", "memories"].join(" ")
    }
}

const SWEEP_ONLY: &str = "env,remap,scandir,seed,state,reconcile,dashboard,hooks,bootlog";

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn runs() -> usize {
    std::env::var("BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(5)
}

fn measure(label: &str, mut f: impl FnMut() -> f64) {
    let v: Vec<f64> = (0..runs()).map(|_| f()).collect();
    let min = v.iter().cloned().fold(f64::INFINITY, f64::min);
    let max = v.iter().cloned().fold(0.0, f64::max);
    println!("{label:<72} {:>9.1} ms   (min {min:.1}, max {max:.1})", median(v));
}

#[test]
#[ignore = "benchmark: cargo test --release --test boot_bench -- --ignored --nocapture"]
fn bench_boot_and_sweep_100k() {
    if !is_root() {
        eprintln!("skipped: needs root to chown");
        return;
    }
    let mut b = Bench::new();
    println!("volume under {}", b.root.display());
    measure("full boot, empty volume (first boot: seeds everything)", || {
        let _ = std::fs::remove_dir_all(b.home());
        b.boot("")
    });
    measure("full boot, empty volume (warm restart)", || b.boot(""));
    let t = Instant::now();
    b.build_volume(1000, 100);
    println!("built {} files in {:.1} s", b.files.len(), t.elapsed().as_secs_f64());
    b.boot("");
    measure("full boot, 100,000 files all right", || b.boot(""));
    measure("sweep only, 100,000 files all right", || b.boot(SWEEP_ONLY));
    measure("sweep only, 100,000 files all right, HERMESINIT_SWEEP_THREADS=1", || {
        b.boot_threads(SWEEP_ONLY, Some("1"))
    });
    measure("full boot, 100,000 files, 1% (1,000) root-owned", || {
        b.break_one_percent();
        b.boot("")
    });
    measure("sweep only, 100,000 files, 1% root-owned", || {
        b.break_one_percent();
        b.boot(SWEEP_ONLY)
    });
    let subs = b.subtrees();
    measure("shell: find SUBTREES ( ! -user 10000 -o ! -group 10000 ) -print -quit, all right", || {
        b.shell(&format!("find {subs} \\( ! -user 10000 -o ! -group 10000 \\) -print -quit | grep -q . ; true"))
    });
    measure("shell: find SUBTREES ( ! -user … ) -exec chown -h 10000:10000 {} +, 1% root-owned", || {
        b.break_one_percent();
        b.shell(&format!("find {subs} \\( ! -user 10000 -o ! -group 10000 \\) -exec chown -h 10000:10000 {{}} +"))
    });
    measure("shell: chown -R 10000:10000 SUBTREES, 1% root-owned", || {
        b.break_one_percent();
        b.shell(&format!("chown -R 10000:10000 {subs}"))
    });
    measure("shell: chown -R 10000:10000 SUBTREES, all right", || b.shell(&format!("chown -R 10000:10000 {subs}")));
}
