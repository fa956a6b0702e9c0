//! The Redox configuration files in `redox/`, parsed on the host:
//! the `pcid.d` entry that makes pcid-spawner start the GPU server for the
//! Xe2 GPUs (the IDs of `xe_svm::pci_ids`), and the init script that starts
//! the other servers in the manifest's order.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::Deserialize;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// One `[[drivers]]` entry with the fields pcid-spawner reads; unknown
/// fields are refused, so a misspelt key fails here, not on the machine.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Driver {
    name: Option<String>,
    class: Option<u8>,
    subclass: Option<u8>,
    ids: Option<BTreeMap<String, Vec<u16>>>,
    command: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PcidConfig {
    drivers: Vec<Driver>,
}

fn pcid_entry() -> PcidConfig {
    let text = std::fs::read_to_string(repo().join("redox/pcid.d/xe-svm.toml")).unwrap();
    toml::from_str(&text).expect("redox/pcid.d/xe-svm.toml parses")
}

#[test]
fn the_pcid_entry_matches_the_xe2_device_ids() {
    use xe_svm::pci_ids::{DISPLAY_CLASS, INTEL_VENDOR, XE2_DEVICES};
    let config = pcid_entry();
    assert_eq!(config.drivers.len(), 1);
    let d = &config.drivers[0];
    assert!(d.name.as_deref().is_some_and(|n| n.contains("xe-svm")));
    assert_eq!(d.class, Some(DISPLAY_CLASS));
    assert_eq!(d.subclass, None, "any display subclass (VGA or 3D)");
    let ids = d.ids.as_ref().expect("ids");
    assert_eq!(ids.len(), 1, "Intel only");
    let (vendor, devices) = ids.iter().next().unwrap();
    let vendor = u16::from_str_radix(vendor.trim_start_matches("0x"), 16).unwrap();
    assert_eq!(vendor, INTEL_VENDOR);
    let listed: BTreeSet<u16> = devices.iter().copied().collect();
    assert_eq!(listed.len(), devices.len(), "a device ID listed twice");
    let ours: BTreeSet<u16> = XE2_DEVICES.iter().map(|(id, _)| *id).collect();
    assert_eq!(listed, ours);
    // A relative command resolves under /usr/lib/drivers/.
    assert_eq!(d.command, ["xe-svm"]);
}

#[test]
fn xe2_platforms_are_lunar_lake_and_battlemage() {
    use xe_svm::pci_ids::{platform, Platform};
    assert_eq!(platform(0x64A0), Some(Platform::LunarLake));
    assert_eq!(platform(0xE20B), Some(Platform::Battlemage));
    assert_eq!(platform(0xE223), Some(Platform::Battlemage));
    // Meteor Lake (Xe-LPG, no recoverable faults) is not ours.
    assert_eq!(platform(0x7D55), None);
}

/// `(verb, program, args)` of each command line of a Redox init script.
fn init_script() -> Vec<(String, String, Vec<String>)> {
    let text = std::fs::read_to_string(repo().join("redox/init.d/90_xe-svm")).unwrap();
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let mut w = l.split_whitespace().map(str::to_owned);
            let verb = w.next().unwrap();
            let program = w.next().unwrap_or_default();
            (verb, program, w.collect())
        })
        .collect()
}

#[test]
fn the_init_script_starts_the_servers_in_the_manifests_order() {
    let lines = init_script();
    for (verb, program, _) in &lines {
        assert!(
            ["requires_weak", "notify", "nowait"].contains(&verb.as_str()),
            "unknown init command {verb} {program}"
        );
    }
    // The base system comes first, the launcher last.
    assert_eq!(lines[0].0, "requires_weak");
    let started: Vec<&str> = lines
        .iter()
        .filter(|(verb, _, _)| verb != "requires_weak")
        .map(|(_, p, _)| p.rsplit('/').next().unwrap())
        .collect();
    let mut expected = init::manifest::START_ORDER.to_vec();
    expected.push("xe-svm-launch");
    assert_eq!(started, expected, "the manifest's order, then the launcher");
    // Servers are started with `notify`: the next waits for its scheme.
    let servers = &lines[1..lines.len() - 1];
    for (verb, program, _) in servers {
        assert_eq!(verb, "notify", "{program}");
    }
    // The GPU server drives the model's device endpoint, and it and the
    // pager serve the same client slots.
    let args = |name: &str| -> Vec<String> {
        let line = servers.iter().find(|(_, p, _)| p.ends_with(name)).unwrap();
        line.2.clone()
    };
    let gpu = args("/xe-svm");
    let device = gpu.iter().position(|a| a == "--device").unwrap();
    assert_eq!(gpu[device + 1], hw::control::device_path());
    let badges = |v: &[String]| -> Vec<String> {
        v.windows(2)
            .filter(|w| w[0] == "--client-badge")
            .map(|w| w[1].clone())
            .collect()
    };
    assert_eq!(badges(&gpu), badges(&args("/pager")));
    assert!(!badges(&gpu).is_empty());
    // The launcher plans for as many client slots as the servers serve.
    let launch = &lines.last().unwrap().2;
    assert_eq!(launch[0], "--clients");
    assert_eq!(launch[1], badges(&gpu).len().to_string());
}

/// The launcher's plan opens exactly the endpoints the GPU server's Redox
/// main declares, on the scheme it declares them on, and hands it exactly
/// the endpoints it waits for (`xe_svm::schemes`).
#[test]
fn the_gpu_servers_schemes_are_the_launchers_plan() {
    use ipc_protocol::scheme::launch::Use;
    use xe_svm::schemes::{self, EndpointRights, CALLED};

    let clients = 3;
    let plan = init::redox_plan::plan(clients).unwrap();
    let rights = EndpointRights {
        client: schemes::CLIENT_RIGHTS,
        notify: ipc_protocol::Rights::NOTIFY,
        shrink: ipc_protocol::Rights::SHRINK,
    };
    let badges: Vec<u64> = (0..clients).map(init::manifest::client_badge).collect();
    for (scheme, declared) in [
        (schemes::SCHEME, schemes::main_endpoints(&badges, rights)),
        (schemes::NOTIFY_SCHEME, schemes::notify_endpoints(rights)),
    ] {
        let opened: BTreeSet<String> = plan
            .steps
            .iter()
            .filter(|s| s.open.scheme == scheme)
            .map(|s| s.open.path.clone())
            .collect();
        let served: BTreeSet<String> = declared
            .iter()
            .map(|e| e.path.clone())
            .filter(|p| p != "control")
            .collect();
        assert_eq!(opened, served, "/scheme/{scheme}");
    }
    let handed: BTreeSet<u16> = plan
        .steps
        .iter()
        .filter_map(|s| match &s.then {
            Use::Handoff { to, role } if to == schemes::SCHEME => Some(*role),
            _ => None,
        })
        .collect();
    assert_eq!(handed, CALLED.into_iter().collect::<BTreeSet<u16>>());
}
