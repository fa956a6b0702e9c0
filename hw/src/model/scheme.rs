//! The device model on Redox: scheme `xe-model` with one endpoint,
//! `device`, whose calls carry the control records of [`crate::control`]
//! ([`crate::control::FRAMING`]) instead of our frames. The driver asks
//! for the `Hello` and gets the register and VRAM handles with it (by
//! `recvfd`); `DmaMap` brings the memory object's handle (by `sendfd`).
//! One driver at a time, as on Linux: when its handle closes, the device
//! stops.

use std::sync::{Arc, Condvar, Mutex};

use ipc_protocol::scheme::redox::{self as scheme, Callbacks, SchemeConfig};
use ipc_protocol::scheme::{Endpoint, Endpoints, Errno, Opener};
use ipc_protocol::{Capability, Rights};

use super::{start, Config, ModelError, Running};
use crate::control::{ControlRecord, DEVICE_ENDPOINT, DEVICE_INTERFACE, DEVICE_SCHEME, FRAMING};

type Gone = Arc<(Mutex<bool>, Condvar)>;

fn callbacks(device: Arc<Running>, gone: Gone) -> Callbacks {
    Callbacks {
        dispatch: Arc::new(move |_s, rx| {
            let rec = ControlRecord::decode(&rx.bytes);
            match device.control(rec, rx.handles) {
                Ok((reply, fds)) => Some((reply.encode().to_vec(), fds)),
                Err(e) => {
                    log::error!("xe-model: answering {rec:?}: {e}");
                    None
                }
            }
        }),
        closed: Arc::new(move |_s| {
            *gone.0.lock().unwrap_or_else(|p| p.into_inner()) = true;
            gone.1.notify_all();
        }),
        handoff: Arc::new(|_| Err(Errno::Invalid)),
    }
}

/// Brings the device up and serves its driver until the driver's handle
/// closes; `opener` may open the endpoint (once).
pub fn serve(cfg: Config, opener: Opener) -> Result<(), ModelError> {
    let device = Arc::new(start(cfg)?);
    let gone: Gone = Arc::default();
    let declared = vec![Endpoint {
        path: DEVICE_ENDPOINT.into(),
        interface: DEVICE_INTERFACE,
        capability: Capability::new(1, Rights::empty()),
    }];
    let endpoints = Endpoints::new(declared, opener)
        .map_err(|_| ModelError::BadConfig("declaring the device endpoint"))?;
    let cfg = SchemeConfig {
        name: DEVICE_SCHEME.into(),
        endpoints,
        workers: 2,
    };
    let on = callbacks(device.clone(), gone.clone());
    let registered = scheme::register_framed(cfg, on, FRAMING)
        .map_err(|_| ModelError::BadConfig("registering /scheme/xe-model"))?;
    if let Err(e) = scheme::notify_ready() {
        log::warn!("xe-model: telling init we are ready: {e}");
    }
    std::thread::Builder::new()
        .name("xe-model-scheme".into())
        .spawn(move || {
            if let Err(e) = registered.serve() {
                log::error!("xe-model: serving /scheme/xe-model: {e}");
            }
        })
        .map_err(|_| ModelError::BadConfig("cannot spawn the scheme thread"))?;
    let mut g = gone.0.lock().unwrap_or_else(|p| p.into_inner());
    while !*g {
        g = gone.1.wait(g).unwrap_or_else(|p| p.into_inner());
    }
    drop(g);
    log::info!("xe-model: the driver closed the device; stopping");
    match Arc::try_unwrap(device) {
        Ok(running) => running.stop(),
        // A call still holds it: the process ends with the engines.
        Err(_) => log::warn!("xe-model: a call outlived the driver"),
    }
    Ok(())
}
