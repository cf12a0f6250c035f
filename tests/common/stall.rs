//! How long other clients wait: a connection that PINGs in a loop while something else runs,
//! and remembers its slowest answer.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub struct PingMeter {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Duration>>,
}

impl PingMeter {
    /// Starts pinging the server at `url`.
    pub fn start(url: &str) -> PingMeter {
        let mut c = redis::Client::open(url).unwrap().get_connection_with_timeout(Duration::from_secs(5)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let (started, first) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let mut worst = Duration::ZERO;
            let pong: String = redis::cmd("PING").query(&mut c).unwrap();
            assert_eq!(pong, "PONG");
            started.send(()).unwrap();
            while !flag.load(Ordering::Relaxed) {
                let t = Instant::now();
                let pong: String = redis::cmd("PING").query(&mut c).unwrap();
                assert_eq!(pong, "PONG");
                worst = worst.max(t.elapsed());
                std::thread::sleep(Duration::from_micros(200));
            }
            worst
        });
        // Measuring starts once the meter's connection answers.
        first.recv_timeout(Duration::from_secs(10)).expect("the meter's first PING");
        PingMeter { stop, thread: Some(thread) }
    }

    /// Stops; gives the longest a PING waited while it ran.
    pub fn worst(mut self) -> Duration {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for PingMeter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
