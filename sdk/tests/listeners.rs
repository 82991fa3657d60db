//! Change listeners: who is told what, and a slow listener never holds changes back.

use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use flagstaff::{Context, FlagChange, TestData, QUEUE_CAPACITY};

const PATIENCE: Duration = Duration::from_secs(10);

/// A listener that forwards every change to the returned receiver.
fn collect() -> (
    impl Fn(&FlagChange) + Send + Sync + 'static,
    Receiver<FlagChange>,
) {
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let f = move |c: &FlagChange| {
        let _ = tx.lock().expect("not poisoned").send(c.clone());
    };
    (f, rx)
}

fn next(rx: &Receiver<FlagChange>) -> FlagChange {
    rx.recv_timeout(PATIENCE).expect("a change notification")
}

fn nothing_more(rx: &Receiver<FlagChange>) {
    // Notifications of one revision arrive together; a later one would come after the marker
    // change each test makes last, so a short wait is enough to see none is pending.
    assert_eq!(rx.recv_timeout(Duration::from_millis(100)).ok(), None);
}

const SEGMENT_FLAG: &str = r#"
key: beta-banner
kind: boolean
variants: { "on": true, "off": false }
off_variant: "off"
enabled: true
rules:
  - id: beta
    conditions: [{ op: in_segment, values: [beta] }]
    serve: { variant: "on" }
default: { variant: "off" }
"#;

#[test]
fn every_changed_flag_is_reported_once_with_its_revision() {
    let data = TestData::new();
    let client = data.client();
    let (all, all_rx) = collect();
    let (one, one_rx) = collect();
    let _all = client.on_change(all);
    let _one = client.on_flag_change("checkout", one);

    data.set_bool("checkout", true);
    let change = next(&all_rx);
    assert_eq!(
        change,
        FlagChange {
            key: "checkout".into(),
            revision: 1,
            removed: false
        }
    );
    assert_eq!(next(&one_rx), change);

    data.set_bool("banner", true);
    assert_eq!(next(&all_rx).key, "banner");
    // The same definition again changes nothing anyone could observe: no notification.
    data.set_bool("banner", true);
    data.remove("checkout").expect("removed");
    let removed = next(&all_rx);
    assert_eq!((removed.key.as_str(), removed.removed), ("checkout", true));
    assert_eq!(removed.revision, 4);
    let removed_one = next(&one_rx);
    assert!(removed_one.removed);
    nothing_more(&all_rx);
    nothing_more(&one_rx);
}

#[test]
fn a_segment_change_reports_the_flags_that_use_it() {
    let data = TestData::new();
    data.set_flag_text("key: beta\nincluded: [user-1]")
        .expect("segment");
    data.set_flag_text(SEGMENT_FLAG).expect("flag");
    data.set_bool("unrelated", true);
    let client = data.client();
    let (f, rx) = collect();
    let _listening = client.on_change(f);

    data.set_flag_text("key: beta\nincluded: [user-1, user-2]")
        .expect("segment");
    assert_eq!(next(&rx).key, "beta-banner");
    assert!(client.bool_value("beta-banner", &Context::new("user-2"), false));
    nothing_more(&rx);
}

#[test]
fn a_dropped_subscription_hears_nothing_more() {
    let data = TestData::new();
    let client = data.client();
    let (f, rx) = collect();
    let subscription = client.on_change(f);
    data.set_bool("a", true);
    assert_eq!(next(&rx).key, "a");
    drop(subscription);
    data.set_bool("a", false);
    nothing_more(&rx);

    // Detached, it lives as long as the client.
    let (f, rx) = collect();
    client.on_change(f).detach();
    data.set_bool("a", true);
    assert_eq!(next(&rx).key, "a");
}

#[test]
fn a_stuck_listener_never_holds_back_changes_and_drops_are_counted() {
    let data = TestData::new();
    let client = data.client();
    let entered = Arc::new(Barrier::new(2));
    let (release, released) = mpsc::channel::<()>();
    let released = Mutex::new(released);
    let stuck = {
        let entered = entered.clone();
        move |c: &FlagChange| {
            if c.revision == 1 {
                entered.wait();
                let _ = released.lock().expect("not poisoned").recv();
            }
        }
    };
    let _stuck = client.on_change(stuck);
    let (f, rx) = collect();
    let _other = client.on_change(f);

    data.set_number("n", 1.0);
    entered.wait();
    // The listeners' thread is stuck in revision 1. Changes keep applying at once; the queue
    // fills and what does not fit is dropped and counted.
    let extra = 50;
    for i in 2..=(QUEUE_CAPACITY + 1 + extra) {
        data.set_number("n", i as f64);
        assert_eq!(
            client.number_value("n", &Context::new("u"), 0.0),
            i as f64,
            "a stuck listener delays no change"
        );
    }
    assert_eq!(client.stats().dropped_notifications, extra as u64);

    release.send(()).expect("released");
    // Revision 1, then the queued ones in order, then nothing of what was dropped.
    for revision in 1..=(QUEUE_CAPACITY as u64 + 1) {
        assert_eq!(next(&rx).revision, revision);
    }
    nothing_more(&rx);
    data.set_bool("after", true);
    assert_eq!(next(&rx).key, "after");
}

#[test]
fn a_panicking_listener_does_not_silence_the_others() {
    let data = TestData::new();
    let client = data.client();
    let _bad = client.on_change(|_| panic!("listener bug"));
    let (f, rx) = collect();
    let _good = client.on_change(f);
    data.set_bool("a", true);
    data.set_bool("b", true);
    assert_eq!(next(&rx).key, "a");
    assert_eq!(next(&rx).key, "b");
}
