//! `upgraded --ha` end to end (issue 28): three real `nats-server`s clustered on loopback
//! (JetStream, replicas 3), two real `upgraded` instances on the sim over its HTTP API and
//! node agents, one upgrade run through every fault the issue names: the leader stopped
//! (SIGSTOP) past its TTL and woken after a takeover, the leader killed (`kill -9`) at
//! random moments mid-drain and mid-package-install, one NATS server killed (the run goes
//! on), then two (the run pauses, says why, and resumes when the quorum is back). After it:
//! the run completed, no node effect happened twice, the stream and both instances' copies
//! hold the same records, and no record of a deposed leader is in them.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use upgraded_ctl::Client;
use upgraded_events::codec;
use upgraded_events::{Event, Record, RunId};
use upgraded_tests::nats::NatsCluster;

/// Short leases so the test takes minutes, not hours: a takeover within TTL + campaign +
/// margin = 4 + 1 + 1 s, and slack for a loaded machine.
const TTL: u64 = 4;
const CAMPAIGN: u64 = 1;
const MARGIN: u64 = 1;
const TAKEOVER_BOUND: Duration = Duration::from_secs(TTL + CAMPAIGN + MARGIN + 2);

struct Instance {
    name: &'static str,
    data: PathBuf,
    socket: PathBuf,
    stderr: PathBuf,
    args: Vec<std::ffi::OsString>,
    child: Option<Child>,
}

impl Instance {
    fn new(base: &Path, name: &'static str, common: &[std::ffi::OsString]) -> Instance {
        let dir = base.join(name);
        std::fs::create_dir_all(&dir).expect("instance dir");
        let data = dir.join("data");
        let socket = dir.join("api.sock");
        let mut args: Vec<std::ffi::OsString> = vec![
            "--data-dir".into(),
            data.clone().into(),
            "--socket".into(),
            socket.clone().into(),
            "--instance".into(),
            name.into(),
        ];
        args.extend_from_slice(common);
        Instance {
            name,
            data,
            socket,
            stderr: dir.join("stderr.log"),
            args,
            child: None,
        }
    }

    fn client(&self) -> Client {
        Client::new(&self.socket)
    }

    fn spawn(&mut self) {
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stderr)
            .expect("stderr file");
        let child = Command::new(common::binary("upgraded"))
            .args(&self.args)
            .env("RUST_LOG", "warn,upgraded_daemon::ha=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("spawn upgraded");
        self.child = Some(child);
    }

    /// `kill -SIG pid`.
    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().map(Child::id).expect("running");
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .expect("kill");
        assert!(ok.success(), "kill -{sig} {pid}");
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// This instance's view of itself, when it answers (a stopped process does not: its
    /// socket takes the connection and never answers).
    async fn ha(&self) -> Option<upgraded_api::HaStatus> {
        tokio::time::timeout(
            Duration::from_millis(500),
            self.client().status_of_instance(),
        )
        .await
        .ok()?
        .ok()?
        .ha
    }

    async fn wait_answering(&self) {
        let t = Instant::now();
        while self.client().status_of_instance().await.is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "{} does not answer; stderr:\n{}",
                self.name,
                self.stderr_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        // SIGKILL ends a stopped process too.
        self.kill9();
    }
}

/// The index of the instance that acts now, once one does (polled every 25 ms).
async fn acting(instances: &[Instance], within: Duration) -> (usize, Duration) {
    let t = Instant::now();
    loop {
        for (i, inst) in instances.iter().enumerate() {
            if inst.child.is_some() && inst.ha().await.is_some_and(|h| h.acting) {
                return (i, t.elapsed());
            }
        }
        assert!(
            t.elapsed() < within,
            "no instance acts within {within:?}; stderr:\n{}\n{}",
            instances[0].stderr_text(),
            instances[1].stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The run's records in the replicated log, decoded, in stream order.
async fn stream_records(urls: &str, run: RunId) -> Vec<Record> {
    let addrs = upgraded_daemon::outbox::server_addrs(urls).expect("urls");
    let client = async_nats::connect(addrs.as_slice())
        .await
        .expect("connect");
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream("UPGRADED_LOG").await.expect("the stream");
    let mut out = Vec::new();
    let mut from = 1;
    let subject = format!("upgraded.log.{run}");
    loop {
        match stream
            .get_first_raw_message_by_subject(&subject, from)
            .await
        {
            Ok(m) => {
                out.push(codec::decode(&m.payload).expect("a record"));
                from = m.sequence + 1;
            }
            Err(_) => return out,
        }
    }
}

/// The run's records as an instance's copy holds them (its API).
async fn copy_records(inst: &Instance, run: RunId) -> Vec<Record> {
    let v = common::run_events(&inst.client(), &run.to_string()).await;
    v.into_iter()
        .map(|r| serde_json::from_value(r).expect("a record"))
        .collect()
}

/// The step some node is in now, from an instance's status.
async fn steps_in_flight(inst: &Instance) -> Vec<String> {
    let Ok(Some(s)) = inst.client().status().await else {
        return vec![];
    };
    s.nodes.iter().filter_map(|n| n.step.clone()).collect()
}

/// `upgradectl status` against an instance.
fn ctl_status(i: &Instance) -> String {
    let out = Command::new(common::binary("upgradectl"))
        .arg("--socket")
        .arg(&i.socket)
        .arg("status")
        .output()
        .expect("upgradectl status");
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_a_killed_stopped_or_partitioned_leader_and_the_run_completes_once() {
    use upgraded_sim::{Clock, SimServer, scenario};
    let seed = common::env_seed("HA_SEED");
    let kills: usize = common::env_number("HA_KILLS", 10);
    eprintln!("HA_SEED={seed} HA_KILLS={kills}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    let mut nats = NatsCluster::start().expect("three nats-servers");
    let urls = nats.urls();
    let dir = tempfile::tempdir().expect("temp dir");
    let base = dir.path();
    // Slow enough virtual time that a drain or an install lasts a moment of real time.
    let scale = 12.0;
    let world = scenario::build("large-16", Clock::real(scale), 7).expect("large-16");
    let sim = SimServer::start(world, ([127, 0, 0, 1], 0).into()).expect("sim");
    common::sim_kubeconfig_and_policy(base, &sim.url(), "10s");
    // Both instances have the same webhook sink: only the leader delivers.
    let hook = common::receiver::Receiver::start(Vec::new()).await;
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(base.join("policy.yaml"))
            .expect("policy");
        writeln!(
            f,
            "notifications:\n  - {{name: ops, kind: webhook, url: '{}/hook', events: [run, canary, rollback, node]}}",
            hook.url()
        )
        .expect("policy");
    }
    let mut shared = common::sim_daemon_args(base, &sim.url());
    shared.extend(<Vec<std::ffi::OsString>>::from([
        "--time-scale".into(),
        scale.to_string().into(),
        "--ha".into(),
        "--nats-url".into(),
        urls.clone().into(),
        "--lease-ttl-secs".into(),
        TTL.to_string().into(),
        "--lease-campaign-secs".into(),
        CAMPAIGN.to_string().into(),
        "--lease-margin-secs".into(),
        MARGIN.to_string().into(),
        "--nats-ack-timeout-secs".into(),
        "2".into(),
    ]));
    let mut inst = [
        Instance::new(base, "admin-a", &shared),
        Instance::new(base, "admin-b", &shared),
    ];
    inst[0].spawn();
    inst[0].wait_answering().await;
    // One virtual clock for both (an accelerated clock is anchored in the data dir).
    let anchor = inst[0].data.join("clock-anchor.json");
    std::fs::create_dir_all(&inst[1].data).expect("data dir");
    std::fs::copy(&anchor, inst[1].data.join("clock-anchor.json")).expect("anchor");
    inst[1].spawn();
    inst[1].wait_answering().await;
    let (first, _) = acting(&inst, Duration::from_secs(60)).await;
    let other = 1 - first;

    // A standby refuses writes with the leader's name; reads work.
    let to_v135 = upgraded_api::StartRequest {
        target: "v1.35.3".into(),
        dry_run: false,
        force: false,
    };
    let refused = inst[other]
        .client()
        .start(&to_v135)
        .await
        .expect_err("a standby refuses a start");
    assert!(
        refused
            .to_string()
            .contains(&format!("the leader is {}", inst[first].name))
            || refused.to_string().contains("no leader holds"),
        "{refused}"
    );
    let started = inst[first]
        .client()
        .start(&to_v135)
        .await
        .expect("the leader starts the run");
    let run = started.run.expect("a run id");
    let began = Instant::now();
    let text = ctl_status(&inst[other]);
    assert!(
        text.contains(&format!("instance {}: not acting", inst[other].name)),
        "{text}"
    );

    // 1. SIGSTOP the leader past its TTL; the standby takes over; SIGCONT: the old one
    // appends nothing, executes nothing, says so.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (stopped, standby) = (first, other);
    inst[stopped].signal("STOP");
    let (now_leading, took) = acting(&inst[..], TAKEOVER_BOUND).await;
    assert_eq!(now_leading, standby, "the stopped leader cannot answer");
    eprintln!("takeover after SIGSTOP: {took:?}");
    inst[stopped].signal("CONT");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let woke = inst[stopped].stderr_text();
    assert!(
        woke.contains("deposed: the lease is admin-"),
        "the woken leader says it was deposed: {woke}"
    );
    let h = inst[stopped].ha().await.expect("answers");
    assert!(!h.acting && h.note.contains("deposed"), "{h:?}");

    let mut takeovers = vec![took];
    let mut leader = now_leading;

    // 2. One NATS server of three down: the run goes on.
    nats.servers[2].stop();
    let before = copy_records(&inst[leader], run).await.len();
    let t = Instant::now();
    loop {
        let now = copy_records(&inst[leader], run).await.len();
        if now > before + 5 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the run stalled with one NATS server down"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // 3. Two down: the run pauses, says why, and resumes when the quorum is back. (With
    // this short TTL, the first server's loss may itself have moved the lease: a stream's
    // Raft leader on it takes seconds to be replaced, longer than a renewal may fail.)
    let (now_leading, _) = acting(&inst[..], TAKEOVER_BOUND).await;
    if now_leading != leader {
        eprintln!("the lease moved while one NATS server was down");
    }
    leader = now_leading;
    nats.servers[1].stop();
    tokio::time::sleep(Duration::from_secs(TTL + 2)).await;
    let paused_at = copy_records(&inst[leader], run).await.len();
    let effects_paused = sim.sim.world().effects.clone();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        copy_records(&inst[leader], run).await.len(),
        paused_at,
        "nothing is recorded without a quorum"
    );
    assert_eq!(
        sim.sim.world().effects,
        effects_paused,
        "nothing is done without a quorum"
    );
    // Every instance says it does not act, and why: NATS.
    for i in &inst {
        let h = i.ha().await.expect("answers without a quorum");
        assert!(!h.acting, "{h:?}");
        assert!(h.note.contains("NATS"), "{h:?}");
    }
    // The one that led says why it stopped.
    let h = inst[leader].ha().await.expect("answers");
    assert!(h.note.contains("NATS unreachable"), "{h:?}");
    let text = ctl_status(&inst[leader]);
    assert!(text.contains("not acting"), "{text}");
    // The standby, restarted now (kill -9, as a host reboot), answers `status` from its
    // own copy and says what it waits for (JetStream, or the lease's answers: the one
    // server left may answer some requests).
    let standby = 1 - leader;
    inst[standby].kill9();
    inst[standby].spawn();
    inst[standby].wait_answering().await;
    // It never says it acts. (Its first view names NATS, but the server left may still
    // open the stream from the state it held, and until the lease's first call goes
    // unanswered the note says it follows: within 20 s it names NATS again.)
    let h = inst[standby].ha().await.expect("answers");
    assert!(!h.acting, "{h:?}");
    let t = Instant::now();
    loop {
        let text = ctl_status(&inst[standby]);
        assert!(
            text.contains("not acting") && text.contains("leader: admin-"),
            "{text}"
        );
        if text.contains("NATS") {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    nats.servers[1].resume().expect("server back");
    nats.servers[2].resume().expect("server back");
    let (back_leader, back) = acting(&inst[..], Duration::from_secs(60)).await;
    leader = back_leader;
    eprintln!("acting again {back:?} after the quorum came back");

    // 4. kill -9 the leader at random moments mid-drain and mid-install; restarted at once
    // (as systemd would), it comes back as a standby.
    let mut done_kills = 0;
    let mut kinds: Vec<String> = Vec::new();
    while done_kills < kills {
        let want = if done_kills % 2 == 0 {
            "drain"
        } else {
            "upgrade-packages"
        };
        // The step asked for, or after 5 s either of them (the run must not end first).
        let t = Instant::now();
        let mut hit = String::new();
        while hit.is_empty() && t.elapsed() < Duration::from_secs(30) {
            let steps = steps_in_flight(&inst[leader]).await;
            let either = t.elapsed() > Duration::from_secs(5);
            if let Some(s) = steps.iter().find(|s| {
                s.contains(want)
                    || (either && (s.contains("drain") || s.contains("upgrade-packages")))
            }) {
                hit = s.clone();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        kinds.push(hit);
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..400))).await;
        if let Ok(Some(s)) = inst[leader].client().status().await
            && s.phase.is_terminal()
        {
            eprintln!(
                "the run ended after {done_kills} kills: {} {:?}",
                s.phase.as_str(),
                s.reason
            );
            break;
        }
        inst[leader].kill9();
        let killed_at = Instant::now();
        done_kills += 1;
        let (next, _) = acting(&inst[..], TAKEOVER_BOUND + Duration::from_secs(30)).await;
        let took = killed_at.elapsed();
        takeovers.push(took);
        assert!(
            took <= TAKEOVER_BOUND,
            "kill {done_kills}: the takeover took {took:?}"
        );
        inst[leader].spawn();
        leader = next;
    }
    eprintln!(
        "kills done at {:?}: {done_kills} in {kinds:?}; takeovers: {takeovers:?}",
        began.elapsed()
    );
    assert!(done_kills >= kills, "the run ended before {kills} kills");
    for want in ["drain", "upgrade-packages"] {
        assert!(
            kinds.iter().any(|k| k.starts_with(want)),
            "no kill mid-{want}: {kinds:?}"
        );
    }

    // The run completes.
    let t = Instant::now();
    let mut done = None;
    while t.elapsed() < Duration::from_secs(300) {
        let (l, _) = acting(&inst[..], Duration::from_secs(60)).await;
        match inst[l].client().status().await {
            Ok(Some(s)) if s.phase.is_terminal() => {
                done = Some(s);
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    let done = done.expect("the run ends within 5 minutes");
    eprintln!("the run ended at {:?}", began.elapsed());
    assert_eq!(done.phase.as_str(), "completed", "{done:?}");
    for n in sim.sim.world().nodes.values() {
        assert_eq!(n.kubelet.to_string(), "v1.35.3", "{}", n.name);
    }
    // No node effect happened twice.
    for (what, n) in &sim.sim.world().effects {
        assert_eq!(*n, 1, "{what} happened {n} times");
    }
    // The stream and both copies hold the same records, and the fold ignored none.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stream = stream_records(&urls, run).await;
    for i in &inst {
        let copy = copy_records(i, run).await;
        assert_eq!(copy.len(), stream.len(), "{}", i.name);
        assert!(copy == stream, "{}'s copy differs from the stream", i.name);
    }
    for (seq, r) in stream.iter().enumerate() {
        assert_eq!(r.seq, seq as u64);
    }
    let state = upgraded_events::RunState::replay(&stream);
    assert!(state.anomalies.is_empty(), "{:?}", state.anomalies);
    let tenures = stream
        .iter()
        .filter(|r| matches!(r.event, Event::LeaderChanged { .. }))
        .count();
    assert!(tenures > kills, "{tenures} LeaderChanged records");
    eprintln!(
        "the run took {:?} of virtual time",
        Duration::from_millis((stream.last().map_or(0, |r| r.at.0) - stream[0].at.0).max(0) as u64)
    );
    // Every notice the log makes reached the webhook, sent by whichever instance acted at
    // the time from the cursor they share: at least once, and again only around a takeover
    // (one in flight when a leader was killed, or sent while its cursor could not be shared).
    let mut fold = upgraded_events::notify::NoticeFold::new("cluster", "x/{run}", "upgradectl");
    let want: std::collections::BTreeSet<String> = stream
        .iter()
        .flat_map(|r| fold.apply(r))
        .map(|n| n.id())
        .collect();
    let delivered = || -> Vec<String> {
        hook.requests()
            .iter()
            .filter(|r| (200..300).contains(&r.status))
            .map(|r| {
                let ce: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON body");
                ce["id"].as_str().expect("id").to_string()
            })
            .collect()
    };
    let t = Instant::now();
    while !want.iter().all(|id| delivered().contains(id)) {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "notices never delivered: {:?}",
            want.iter()
                .filter(|id| !delivered().contains(id))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ids = delivered();
    let distinct: std::collections::BTreeSet<&String> = ids.iter().collect();
    let again = ids.len() - distinct.len();
    eprintln!(
        "notices: {} made, {} posts, {again} of them again",
        want.len(),
        ids.len()
    );
    assert!(want.len() > 20, "{} notices", want.len());
    assert!(
        again <= kills + 6,
        "{again} notices delivered again over {kills} kills: the instances do not share the turn"
    );

    // A third instance given another TTL than the lease's bucket holds is refused at start
    // with the reason (its lease could pass to another before it fenced itself).
    let mut other_ttl = shared.clone();
    let at = other_ttl
        .iter()
        .position(|a| a == "--lease-ttl-secs")
        .expect("the TTL flag");
    other_ttl[at + 1] = (TTL + 5).to_string().into();
    let mut third = Instance::new(base, "admin-c", &other_ttl);
    third.spawn();
    let t = Instant::now();
    let exit = loop {
        if let Some(s) = third
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
        {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "an instance with another TTL still runs: {}",
            third.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!exit.success(), "{exit}");
    let said = third.stderr_text();
    assert!(said.contains("give every instance the same TTL"), "{said}");
    third.child = None;

    let mut sorted = takeovers.clone();
    sorted.sort();
    eprintln!(
        "takeover times over {} takeovers: median {:?}, worst {:?}",
        sorted.len(),
        sorted[sorted.len() / 2],
        sorted[sorted.len() - 1]
    );
}

/// An instance whose NATS servers are all unreachable still serves `status` from its own
/// copy, says what it waits for, refuses writes, and stops at once on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_without_nats_answers_status_refuses_writes_and_stops() {
    use upgraded_sim::{Clock, SimServer, scenario};
    let dir = tempfile::tempdir().expect("temp dir");
    let base = dir.path();
    let world = scenario::build("lab", Clock::real(1.0), 7).expect("lab");
    let sim = SimServer::start(world, ([127, 0, 0, 1], 0).into()).expect("sim");
    common::sim_kubeconfig_and_policy(base, &sim.url(), "10s");
    // A loopback port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut args = common::sim_daemon_args(base, &sim.url());
    args.extend(<Vec<std::ffi::OsString>>::from([
        "--ha".into(),
        "--nats-url".into(),
        format!("nats://127.0.0.1:{port}").into(),
    ]));
    let mut i = Instance::new(base, "admin-c", &args);
    i.spawn();
    i.wait_answering().await;
    let h = i.ha().await.expect("answers");
    assert!(
        !h.acting && h.note.contains("waiting for NATS JetStream"),
        "{h:?}"
    );
    let text = ctl_status(&i);
    assert!(
        text.contains("instance admin-c: not acting") && text.contains("waiting for NATS"),
        "{text}"
    );
    let refused = i
        .client()
        .start(&upgraded_api::StartRequest {
            target: "v1.35.3".into(),
            dry_run: false,
            force: false,
        })
        .await
        .expect_err("a standby refuses a start");
    assert!(refused.to_string().contains("admin-c"), "{refused}");
    // SIGTERM: it exits without waiting out the keeper's 5 s, though it never reached NATS.
    i.signal("TERM");
    let t = Instant::now();
    let mut child = i.child.take().expect("running");
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "still running 10 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}: {}", i.stderr_text());
    assert!(
        t.elapsed() < Duration::from_millis(4500),
        "took {:?} to stop",
        t.elapsed()
    );
}
