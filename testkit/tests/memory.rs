//! What a client keeps in memory between calls, counted by a global
//! allocator that tracks live bytes (this test binary's own).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use breakwater_testkit::{Reply, Sim};
use common::fetch;
use http::Method;

mod common;

/// The system allocator, counting the bytes currently allocated.
struct LiveBytes;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is passed straight to `System`; only a counter is added.
unsafe impl GlobalAlloc for LiveBytes {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: LiveBytes = LiveBytes;

const MIB: usize = 1 << 20;

/// A large body is read into one buffer and handed out without a copy; once
/// the caller drops it, the pooled connection must not keep that buffer
/// (or a view that keeps it alive) for the next call.
#[test]
fn a_pooled_connection_does_not_keep_a_large_body_buffer() {
    let mut sim = Sim::new(83);
    let api = sim.mock("http://api.test");
    api.route(Method::GET, "/small").respond(Reply::json("{}"));
    api.route(Method::GET, "/big")
        .respond(Reply::new(200, vec![b'x'; 4 * MIB]));
    let client = breakwater::Client::builder(sim.runtime(), "http://api.test/")
        .build()
        .unwrap();
    let (before, after) = sim.run(async move {
        fetch(&client, "small").await;
        let before = LIVE.load(Ordering::Relaxed);
        let body = fetch(&client, "big").await;
        assert_eq!(body.len(), 4 * MIB);
        drop(body);
        // The next call on the same connection reads into its buffer again.
        fetch(&client, "small").await;
        (before, LIVE.load(Ordering::Relaxed))
    });
    assert_eq!(sim.connects(), 1, "the calls did not share a connection");
    let kept = after - before;
    assert!(
        kept < (MIB / 4) as isize,
        "the client kept {kept} more bytes after a 4 MiB body than before it"
    );
}
