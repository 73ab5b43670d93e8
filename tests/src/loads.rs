//! Every load of the dispatcher's list, as Kamailio's own log reports it,
//! with the moment each line appeared: the tests count and time reloads
//! at Kamailio's side, not from the feeder's log.
//!
//! The dispatcher's loader logs `found [N] dest sets` at debug level after
//! each load (`ds_load_list`), so the Kamailio must run with `debug=3`.
//! Its RPC logs `ongoing reload` for each reload its `reload_delta`
//! refuses, and dsfeed.so logs `applied version` for each of its swaps.

use std::io::{BufRead as _, BufReader, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What a log line says about the dispatcher's list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The dispatcher's loader finished loading a list (any writer).
    Loaded,
    /// `dispatcher.reload` (or `ds_reload()`) refused by `reload_delta`.
    ReloadRefused,
    /// dsfeed.so swapped a snapshot in.
    ModuleSwap,
}

impl Event {
    fn of(line: &str) -> Option<Event> {
        if line.contains("ds_load_list") && line.contains("dest sets") {
            Some(Event::Loaded)
        } else if line.contains("ongoing reload") {
            Some(Event::ReloadRefused)
        } else if line.contains("dsfeed [feed]: applied version") {
            Some(Event::ModuleSwap)
        } else {
            None
        }
    }
}

/// Follows a Kamailio log file from its start, noting when each event's
/// line appeared (polled every few milliseconds).
pub struct LoadLog {
    events: Arc<Mutex<Vec<(Instant, Event)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// How often the log is read: well below the pacing intervals measured.
const POLL: Duration = Duration::from_millis(5);

impl LoadLog {
    /// Starts following `log`, which need not exist yet.
    pub fn follow(log: &Path) -> LoadLog {
        let events = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let (log, events, stop) = (log.to_owned(), events.clone(), stop.clone());
            move || follow(&log, &events, &stop)
        });
        LoadLog {
            events,
            stop,
            thread: Some(thread),
        }
    }

    /// Every event seen so far, in order.
    pub fn events(&self) -> Vec<(Instant, Event)> {
        self.events.lock().unwrap().clone()
    }

    /// How many `event`s were seen so far.
    pub fn count(&self, event: Event) -> usize {
        self.events().iter().filter(|(_, e)| *e == event).count()
    }

    /// When each `event` was seen.
    pub fn times(&self, event: Event) -> Vec<Instant> {
        self.events()
            .into_iter()
            .filter(|(_, e)| *e == event)
            .map(|(at, _)| at)
            .collect()
    }
}

fn follow(log: &PathBuf, events: &Mutex<Vec<(Instant, Event)>>, stop: &AtomicBool) {
    let mut offset = 0;
    let mut partial = String::new();
    while !stop.load(Ordering::Relaxed) {
        if let Ok(mut file) = std::fs::File::open(log)
            && file.seek(SeekFrom::Start(offset)).is_ok()
        {
            let mut reader = BufReader::new(file);
            loop {
                let mut chunk = String::new();
                match reader.read_line(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => offset += n as u64,
                }
                partial.push_str(&chunk);
                if !partial.ends_with('\n') {
                    continue;
                }
                if let Some(event) = Event::of(&partial) {
                    events.lock().unwrap().push((Instant::now(), event));
                }
                partial.clear();
            }
        }
        std::thread::sleep(POLL);
    }
}

impl Drop for LoadLog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
