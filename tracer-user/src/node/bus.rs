//! Requests to systemd and networkd on the system bus, from a bus monitor.
//!
//! Why a monitor (`org.freedesktop.DBus.Monitoring.BecomeMonitor`) and not the kernel:
//! dbus-daemon copies to it only the method calls its match rules name (calls to
//! `org.freedesktop.systemd1` and `org.freedesktop.network1`), whole and already framed,
//! at no cost to any other process or syscall; capturing them in the kernel would mean
//! reading every unix-socket send on the node to find the few that matter, and
//! reassembling D-Bus messages split across sends. What a monitor cannot see:
//! - systemd's private socket `/run/systemd/private`, peer to peer, no bus: `systemctl`
//!   as root talks there. Its exec is an event with its command line instead
//!   (pipeline/requests.rs), which says the same (`systemctl daemon-reload`).
//! - the caller's pid, which the bus knows only while the caller is connected. It is
//!   asked (`GetConnectionUnixProcessID`) when the connection appears (the bus driver's
//!   `NameOwnerChanged` signal, which the monitor also takes): a `busctl` whose call
//!   systemd refuses at once is gone before its call could be asked about (seen in the
//!   VM suite). Connections older than tracer are asked when their call comes.
//!
//! The monitor runs on a thread of its own; the reader thread takes the calls from a
//! bounded channel (calls dropped when it is full are counted) and makes them events.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use futures_util::StreamExt;
use zbus::message::Type as MessageType;
use zbus::zvariant::{OwnedValue, Value};
use zbus::{MatchRule, Message, MessageStream};

use crate::stream::schema::{BusCall, Timestamp};

/// Where the system bus listens, below `--host-root` (dbus-daemon's default,
/// `/run/dbus/system_bus_socket`; `/var/run` is a link to `/run` on every current distro).
pub const SOCKET: &str = "run/dbus/system_bus_socket";

const SYSTEMD: &str = "org.freedesktop.systemd1";
const NETWORKD: &str = "org.freedesktop.network1";
const SYSTEMD_PATH: &str = "/org/freedesktop/systemd1";
const NETWORKD_PATH: &str = "/org/freedesktop/network1";

/// Calls waiting for the reader thread (a daemon-reload storm is a handful).
const QUEUE: usize = 4096;

/// How long the caller's pid is waited for.
const ASK_PID: Duration = Duration::from_millis(500);

/// Properties as systemd takes them: `a(sv)`.
type Properties = Vec<(String, OwnedValue)>;
/// `StartTransientUnit(s name, s mode, a(sv) properties, a(sa(sv)) aux)`.
type TransientUnit = (String, String, Properties, Vec<(String, Properties)>);

/// One call, as the monitor saw it.
#[derive(Debug, Clone)]
pub struct Request {
    /// When the monitor received it (the bus hands it to systemd at the same moment).
    pub time: Timestamp,
    /// The caller's pid in the bus's PID namespace, when the bus could still name it.
    pub pid: Option<u32>,
    pub call: BusCall,
}

/// A running monitor.
pub struct Monitor {
    rx: mpsc::Receiver<Request>,
    dropped: Arc<AtomicU64>,
}

impl Monitor {
    /// Connects to the bus at `socket`, becomes a monitor of the calls to systemd and
    /// networkd, and returns once the bus accepted it; the error says why not.
    pub fn start(socket: &Path) -> Result<Monitor, String> {
        if !socket.exists() {
            return Err(format!("no system bus socket at {}", socket.display()));
        }
        let address = format!("unix:path={}", socket.display());
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let (ready_tx, ready_rx) = mpsc::channel();
        let dropped = Arc::new(AtomicU64::new(0));
        let counter = dropped.clone();
        std::thread::Builder::new()
            .name("tracer-bus".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("cannot start the bus thread's runtime: {e}")));
                        return;
                    }
                };
                rt.block_on(run(address, tx, ready_tx, counter));
            })
            .map_err(|e| format!("cannot start the bus thread: {e}"))?;
        match ready_rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(())) => Ok(Monitor { rx, dropped }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!("the system bus at {} did not answer within 5 s", socket.display())),
        }
    }

    /// The calls seen since the last call.
    pub fn take(&self) -> impl Iterator<Item = Request> + '_ {
        self.rx.try_iter()
    }

    /// Calls dropped because the reader thread was behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

async fn connect(address: &str) -> zbus::Result<zbus::Connection> {
    zbus::connection::Builder::address(address)?.build().await
}

/// How long to wait before watching again after the bus closed the monitor (dbus-daemon
/// restarted, as a package upgrade may do).
const RETRY: Duration = Duration::from_secs(5);

async fn run(
    address: String,
    tx: mpsc::SyncSender<Request>,
    ready: mpsc::Sender<Result<(), String>>,
    dropped: Arc<AtomicU64>,
) {
    let mut first = Some(ready);
    loop {
        match watch(&address).await {
            Ok((monitor, dbus)) => {
                match first.take() {
                    Some(r) => {
                        let _ = r.send(Ok(()));
                    }
                    None => tracing::warn!("the system bus accepted the monitor again"),
                }
                if !relay(&monitor, &dbus, &tx, &dropped).await {
                    return; // the reader thread is gone
                }
                tracing::warn!(
                    "the system bus closed the monitor: requests to systemd and networkd are not seen until it \
                     accepts it again (tried every {} s)",
                    RETRY.as_secs()
                );
            }
            Err(e) => {
                if let Some(r) = first.take() {
                    let _ = r.send(Err(e));
                    return;
                }
            }
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// Connects twice (the monitor, and a connection that asks the bus for callers' pids)
/// and becomes a monitor of the calls under systemd's and networkd's object paths.
async fn watch(address: &str) -> Result<(zbus::Connection, zbus::fdo::DBusProxy<'static>), String> {
    let monitor = connect(address).await.map_err(|e| format!("cannot connect to the system bus: {e}"))?;
    let asker = connect(address).await.map_err(|e| format!("cannot connect to the system bus: {e}"))?;
    // By object path: a match rule's `destination` must be a unique name, and the calls
    // are addressed to the well-known one (D-Bus specification, "Match Rules").
    let mut rules = [SYSTEMD_PATH, NETWORKD_PATH]
        .into_iter()
        .map(|p| Ok(MatchRule::builder().msg_type(MessageType::MethodCall).path_namespace(p)?.build()))
        .collect::<zbus::Result<Vec<_>>>()
        .map_err(|e| e.to_string())?;
    // Every new connection (the bus announces its unique name): its pid is asked then,
    // while the caller is surely alive, not only when its call comes.
    rules.push(
        MatchRule::builder()
            .msg_type(MessageType::Signal)
            .sender("org.freedesktop.DBus")
            .and_then(|b| b.member("NameOwnerChanged"))
            .map_err(|e| e.to_string())?
            .build(),
    );
    zbus::fdo::MonitoringProxy::new(&monitor)
        .await
        .map_err(|e| e.to_string())?
        .become_monitor(&rules, 0)
        .await
        .map_err(|e| format!("the system bus refused BecomeMonitor (tracer must run as root): {e}"))?;
    let dbus = zbus::fdo::DBusProxy::new(&asker).await.map_err(|e| e.to_string())?;
    Ok((monitor, dbus))
}

/// Hands the monitored calls to the reader thread until the bus closes the monitor
/// (true) or the reader thread is gone (false).
async fn relay(
    monitor: &zbus::Connection,
    dbus: &zbus::fdo::DBusProxy<'_>,
    tx: &mpsc::SyncSender<Request>,
    dropped: &AtomicU64,
) -> bool {
    let ask = |name: zbus::names::UniqueName<'static>| async move {
        tokio::time::timeout(ASK_PID, dbus.get_connection_unix_process_id(name.into()))
            .await
            .ok()
            .and_then(Result::ok)
    };
    // Unique name -> pid, asked when the connection appeared.
    let mut pids: HashMap<String, u32> = HashMap::new();
    let mut stream = MessageStream::from(monitor);
    while let Some(msg) = stream.next().await {
        let Ok(msg) = msg else { continue };
        let time = Timestamp::now();
        if msg.header().message_type() == MessageType::Signal {
            if let Some(name) = new_connection(&msg) {
                if let Some(pid) = ask(name.clone()).await {
                    if pids.len() >= MAX_CONNECTIONS {
                        pids.clear();
                    }
                    pids.insert(name.to_string(), pid);
                }
            }
            continue;
        }
        let Some(call) = decode(&msg) else { continue };
        let pid = match msg.header().sender() {
            Some(s) => match pids.get(s.as_str()) {
                Some(pid) => Some(*pid),
                None => ask(s.to_owned()).await,
            },
            None => None,
        };
        match tx.try_send(Request { time, pid, call }) {
            Ok(()) => {}
            Err(mpsc::TrySendError::Full(_)) => {
                dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(mpsc::TrySendError::Disconnected(_)) => return false,
        }
    }
    true
}

/// Connections remembered (a node has far fewer on its system bus).
const MAX_CONNECTIONS: usize = 4096;

/// The unique name of a connection that just appeared: the bus driver's
/// `NameOwnerChanged(name, "", name)`.
fn new_connection(msg: &Message) -> Option<zbus::names::UniqueName<'static>> {
    if msg.header().member().map(|m| m.as_str()) != Some("NameOwnerChanged") {
        return None;
    }
    let (name, old, new): (String, String, String) = msg.body().deserialize().ok()?;
    if !old.is_empty() || new != name || !name.starts_with(':') {
        return None;
    }
    zbus::names::UniqueName::try_from(name).ok()
}

/// The call a message is, when it is one that changes something.
fn decode(msg: &Message) -> Option<BusCall> {
    let h = msg.header();
    if h.message_type() != MessageType::MethodCall {
        return None;
    }
    let destination = h.destination()?.to_string();
    if destination != SYSTEMD && destination != NETWORKD {
        return None;
    }
    let interface = h.interface().map(|i| i.to_string()).unwrap_or_default();
    let member = h.member()?.to_string();
    let path = h.path().map(|p| p.to_string()).unwrap_or_default();
    let sender = h.sender().map(|s| s.to_string()).unwrap_or_default();
    let body = msg.body();
    let mut call = BusCall { destination, interface, member, path, unit: None, args: Vec::new(), sender };
    let props = |p: Vec<(String, OwnedValue)>| -> Vec<String> {
        p.iter().map(|(k, v)| format!("{k}={}", render(v))).collect()
    };
    match (call.interface.as_str(), call.member.as_str()) {
        ("org.freedesktop.systemd1.Manager", "SetUnitProperties") => {
            let (unit, runtime, p): (String, bool, Vec<(String, OwnedValue)>) = body.deserialize().ok()?;
            call.unit = Some(unit);
            call.args = props(p);
            if !runtime {
                call.args.push("(persistent)".into());
            }
        }
        ("org.freedesktop.systemd1.Manager", "StartTransientUnit") => {
            let (unit, _mode, p, _aux): TransientUnit = body.deserialize().ok()?;
            call.unit = Some(unit);
            call.args = props(p);
        }
        (
            "org.freedesktop.systemd1.Manager",
            "StartUnit"
            | "StopUnit"
            | "RestartUnit"
            | "TryRestartUnit"
            | "ReloadUnit"
            | "ReloadOrRestartUnit"
            | "ReloadOrTryRestartUnit",
        ) => {
            let (unit, _mode): (String, String) = body.deserialize().ok()?;
            call.unit = Some(unit);
        }
        ("org.freedesktop.systemd1.Manager", "KillUnit") => {
            let (unit, whom, signal): (String, String, i32) = body.deserialize().ok()?;
            call.unit = Some(unit);
            call.args = vec![whom, format!("signal {signal}")];
        }
        ("org.freedesktop.systemd1.Manager", "Reload" | "Reexecute") => {}
        (
            "org.freedesktop.systemd1.Unit",
            "Start" | "Stop" | "Restart" | "TryRestart" | "Reload" | "ReloadOrRestart",
        ) => {
            call.unit = unit_of(&call.path, "/org/freedesktop/systemd1/unit/");
        }
        ("org.freedesktop.systemd1.Unit", "SetProperties") => {
            let (_runtime, p): (bool, Vec<(String, OwnedValue)>) = body.deserialize().ok()?;
            call.unit = unit_of(&call.path, "/org/freedesktop/systemd1/unit/");
            call.args = props(p);
        }
        ("org.freedesktop.systemd1.Unit", "Kill") => {
            let (whom, signal): (String, i32) = body.deserialize().ok()?;
            call.unit = unit_of(&call.path, "/org/freedesktop/systemd1/unit/");
            call.args = vec![whom, format!("signal {signal}")];
        }
        ("org.freedesktop.network1.Manager", "Reload") => {}
        ("org.freedesktop.network1.Manager", "ReconfigureLink" | "RenewLink" | "ForceRenewLink") => {
            let (ifindex,): (i32,) = body.deserialize().ok()?;
            call.unit = Some(format!("link {ifindex}"));
        }
        ("org.freedesktop.network1.Link", "Reconfigure" | "Renew" | "ForceRenew") => {
            call.unit = unit_of(&call.path, "/org/freedesktop/network1/link/").map(|i| format!("link {i}"));
        }
        _ => return None,
    }
    call.args.truncate(BusCall::MAX_ARGS);
    for a in &mut call.args {
        if a.len() > BusCall::MAX_ARG_LEN {
            let mut cut = BusCall::MAX_ARG_LEN;
            while !a.is_char_boundary(cut) {
                cut -= 1;
            }
            a.truncate(cut);
            a.push('…');
        }
    }
    Some(call)
}

/// A unit's name from its object path: sd_bus_path_encode escapes every byte but
/// `[A-Za-z0-9]` as `_xx` (hex), e.g. `kubepods_2dbesteffort_2eslice`.
fn unit_of(path: &str, prefix: &str) -> Option<String> {
    let enc = path.strip_prefix(prefix)?;
    let b = enc.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'_' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).ok()?, 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// A property value as `systemctl show` would print it, for the basic types.
fn render(v: &Value<'_>) -> String {
    match v {
        Value::U8(n) => n.to_string(),
        Value::Bool(b) => if *b { "yes" } else { "no" }.to_string(),
        Value::I16(n) => n.to_string(),
        Value::U16(n) => n.to_string(),
        Value::I32(n) => n.to_string(),
        Value::U32(n) => n.to_string(),
        Value::I64(n) => n.to_string(),
        Value::U64(n) => n.to_string(),
        Value::F64(n) => n.to_string(),
        Value::Str(s) => s.to_string(),
        Value::ObjectPath(p) => p.to_string(),
        Value::Value(inner) => render(inner),
        // `ay` (AllowedCPUs, AllowedMemoryNodes: a bitmask): hex bytes, lowest first.
        Value::Array(a) if a.inner().iter().all(|v| matches!(v, Value::U8(_))) => {
            let hex: String = a
                .inner()
                .iter()
                .filter_map(|v| if let Value::U8(b) = v { Some(format!("{b:02x}")) } else { None })
                .collect();
            format!("0x{hex}")
        }
        Value::Array(a) => a.inner().iter().map(render).collect::<Vec<_>>().join(" "),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_names_from_object_paths() {
        assert_eq!(
            unit_of(
                "/org/freedesktop/systemd1/unit/kubepods_2dbesteffort_2eslice",
                "/org/freedesktop/systemd1/unit/"
            )
            .as_deref(),
            Some("kubepods-besteffort.slice")
        );
        assert_eq!(
            unit_of("/org/freedesktop/network1/link/_33", "/org/freedesktop/network1/link/").as_deref(),
            Some("3")
        );
        assert_eq!(unit_of("/elsewhere", "/org/freedesktop/systemd1/unit/"), None);
    }

    #[test]
    fn set_unit_properties_is_decoded_with_its_properties() {
        let body = (
            "kubepods-burstable.slice",
            true,
            vec![("CPUWeight", Value::U64(7)), ("MemoryAccounting", Value::Bool(true))],
        );
        let msg = Message::method_call("/org/freedesktop/systemd1", "SetUnitProperties")
            .unwrap()
            .destination(SYSTEMD)
            .unwrap()
            .interface("org.freedesktop.systemd1.Manager")
            .unwrap()
            .build(&body)
            .unwrap();
        let call = decode(&msg).expect("decoded");
        assert_eq!(call.unit.as_deref(), Some("kubepods-burstable.slice"));
        assert_eq!(call.args, ["CPUWeight=7", "MemoryAccounting=yes"]);
        // A bitmask and a list, as kubelet sets them.
        assert_eq!(render(&Value::from(vec![3u8, 1u8])), "0x0301");
        assert_eq!(render(&Value::from(vec!["a.slice", "b.slice"])), "a.slice b.slice");
        assert_eq!(
            call.describe(),
            "SetUnitProperties(kubepods-burstable.slice, CPUWeight=7, MemoryAccounting=yes)"
        );
        // A read (GetUnit) is no request.
        let get = Message::method_call("/org/freedesktop/systemd1", "GetUnit")
            .unwrap()
            .destination(SYSTEMD)
            .unwrap()
            .interface("org.freedesktop.systemd1.Manager")
            .unwrap()
            .build(&("x.service",))
            .unwrap();
        assert!(decode(&get).is_none());
    }
}
