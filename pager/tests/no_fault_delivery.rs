//! A runtime whose kernel delivers no faults (Redox today, docs/redox.md
//! section 5) still serves objects; a view, which needs faults, is refused
//! with `NotSupported` and leaves nothing behind.
#![cfg(not(feature = "shuttle"))]

use ipc_protocol::interfaces::pager::{self as p, PagerError};
use pager::core::view::PAGE;
use pager::testing::runtime::{model_core, small_config, ModelHandle};
use session::Handle;

const CLIENT: u64 = 100;

#[test]
fn a_view_without_fault_delivery_is_not_supported_and_objects_still_work() {
    let core = model_core(small_config(""));
    let s = core.client(CLIENT).unwrap();
    let create = p::Request::CreateObject(p::CreateObject {
        size_bytes: 4 * PAGE,
    });
    let (r, handles) = core.pager_request(&s, create, vec![]).unwrap();
    let p::Reply::CreateObject(o) = r else {
        panic!("{r:?}");
    };
    assert_eq!(handles.len(), 1, "the object's memory handle");
    let attach = p::AttachView {
        object: o.object,
        addr: 0x1000_0000,
        object_first_page: 0,
        pages: 4,
    };
    let refused = core.pager_request(
        &s,
        p::Request::AttachView(attach),
        vec![ModelHandle::NoFaults],
    );
    assert_eq!(refused.err(), Some(PagerError::NotSupported));
    let object = s
        .object(Handle::from_raw(o.object.get()))
        .expect("the object stays");
    assert!(object.views().is_empty(), "no view was recorded");
    drop(object);
    let destroy = p::Request::DestroyObject(p::DestroyObject { object: o.object });
    core.pager_request(&s, destroy, vec![]).unwrap();
}
