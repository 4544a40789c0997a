//! The container's network devices, through rtnetlink (no `ip` binary):
//!
//! - the loopback interface of a new network namespace, down when the kernel
//!   creates it, is brought up, as runc and crun do (servers, test harnesses
//!   and language runtimes talk to themselves over 127.0.0.1);
//! - `linux.netDevices`: host devices moved into the container's network
//!   namespace (renamed if asked, with their permanent global addresses, and
//!   up), and moved back to the runtime's namespace when the container is
//!   deleted.

use crate::{Error, Result};
use oci_spec::runtime::LinuxNetDevice;
use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// The loopback interface's index: the first device of every network namespace.
const LOOPBACK_INDEX: i32 = 1;

const IFLA_IFNAME: u16 = 3;
const IFLA_NET_NS_FD: u16 = 28;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_FLAGS: u16 = 8;
const IFA_F_NODAD: u8 = 0x02;
const IFA_F_PERMANENT: u32 = 0x80;
const RT_SCOPE_UNIVERSE: u8 = 0;
const NLMSG_HDRLEN: usize = 16;

/// Brings the loopback interface of the calling process's network namespace up
/// and waits for the kernel's answer.
pub fn loopback_up() -> Result<()> {
    Rtnl::open()?.set_up(LOOPBACK_INDEX, true).map_err(|e| Error::sys("rtnetlink", "loopback up", e))
}

/// An address of an interface: family, prefix length and the address bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Address {
    family: u8,
    prefix: u8,
    addr: Vec<u8>,
}

/// An rtnetlink socket, in the network namespace it was made in.
struct Rtnl {
    sock: OwnedFd,
    seq: u32,
}

fn attr(msg: &mut Vec<u8>, kind: u16, data: &[u8]) {
    let len = 4 + data.len();
    msg.extend_from_slice(&(len as u16).to_ne_bytes());
    msg.extend_from_slice(&kind.to_ne_bytes());
    msg.extend_from_slice(data);
    msg.resize(msg.len() + (4 - len % 4) % 4, 0);
}

/// The attributes of a message body starting at `from`, by type.
fn attrs(body: &[u8], from: usize) -> HashMap<u16, &[u8]> {
    let mut out = HashMap::new();
    let mut at = from;
    while at + 4 <= body.len() {
        let len = u16::from_ne_bytes([body[at], body[at + 1]]) as usize;
        let kind = u16::from_ne_bytes([body[at + 2], body[at + 3]]) & 0x3fff;
        if len < 4 || at + len > body.len() {
            break;
        }
        out.insert(kind, &body[at + 4..at + len]);
        at += (len + 3) & !3;
    }
    out
}

fn ifinfomsg(index: i32, flags: u32, change: u32) -> Vec<u8> {
    let mut m = vec![0u8; 16];
    m[0] = libc::AF_UNSPEC as u8;
    m[4..8].copy_from_slice(&index.to_ne_bytes());
    m[8..12].copy_from_slice(&flags.to_ne_bytes());
    m[12..16].copy_from_slice(&change.to_ne_bytes());
    m
}

impl Rtnl {
    fn open() -> Result<Rtnl> {
        // SAFETY: plain socket(2) call; the descriptor is owned right below.
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
        if fd < 0 {
            return Err(Error::sys("socket", "rtnetlink", nix::Error::last()));
        }
        // SAFETY: socket(2) just returned this descriptor and nothing else owns it.
        Ok(Rtnl { sock: unsafe { OwnedFd::from_raw_fd(fd) }, seq: 0 })
    }

    /// A socket in the network namespace open at `netns` (made by a thread
    /// that joins it, so the calling thread stays where it is).
    fn open_in(netns: BorrowedFd<'_>) -> Result<Rtnl> {
        let ns = netns.try_clone_to_owned().map_err(|e| Error::io("dup", "network namespace", e))?;
        std::thread::spawn(move || -> Result<Rtnl> {
            nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| Error::sys("setns", "the container's network namespace", e))?;
            Rtnl::open()
        })
        .join()
        .map_err(|_| Error::Init("rtnetlink: the thread joining the network namespace panicked".into()))?
    }

    /// Sends one request (`kind`, `flags`, body) and returns the replies'
    /// bodies (with their types) up to the acknowledgement or the end of a dump.
    fn call(&mut self, kind: u16, flags: u16, body: &[u8]) -> nix::Result<Vec<(u16, Vec<u8>)>> {
        self.seq += 1;
        let len = NLMSG_HDRLEN + body.len();
        let mut msg = Vec::with_capacity(len);
        msg.extend_from_slice(&(len as u32).to_ne_bytes());
        msg.extend_from_slice(&kind.to_ne_bytes());
        msg.extend_from_slice(&(flags | libc::NLM_F_REQUEST as u16 | libc::NLM_F_ACK as u16).to_ne_bytes());
        msg.extend_from_slice(&self.seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(body);
        nix::unistd::write(&self.sock, &msg)?;
        let mut replies = Vec::new();
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match nix::unistd::read(self.sock.as_raw_fd(), &mut buf) {
                Err(nix::Error::EINTR) => continue,
                other => other?,
            };
            let mut at = 0;
            while at + NLMSG_HDRLEN <= n {
                let mlen = u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
                let mkind = u16::from_ne_bytes([buf[at + 4], buf[at + 5]]);
                let mseq = u32::from_ne_bytes([buf[at + 8], buf[at + 9], buf[at + 10], buf[at + 11]]);
                if mlen < NLMSG_HDRLEN || at + mlen > n {
                    return Err(nix::Error::EBADMSG);
                }
                let payload = &buf[at + NLMSG_HDRLEN..at + mlen];
                at += (mlen + 3) & !3;
                if mseq != self.seq {
                    continue;
                }
                match mkind as i32 {
                    libc::NLMSG_ERROR => {
                        let errno = i32::from_ne_bytes([payload[0], payload[1], payload[2], payload[3]]);
                        return if errno == 0 { Ok(replies) } else { Err(nix::Error::from_raw(-errno)) };
                    }
                    libc::NLMSG_DONE => return Ok(replies),
                    _ => replies.push((mkind, payload.to_vec())),
                }
            }
        }
    }

    /// The index of the interface called `name`, or None.
    fn index_of(&mut self, name: &str) -> nix::Result<Option<i32>> {
        let mut body = ifinfomsg(0, 0, 0);
        attr(&mut body, IFLA_IFNAME, format!("{name}\0").as_bytes());
        match self.call(libc::RTM_GETLINK, 0, &body) {
            Ok(replies) => Ok(replies
                .iter()
                .find(|(k, b)| *k == libc::RTM_NEWLINK && b.len() >= 16)
                .map(|(_, b)| i32::from_ne_bytes([b[4], b[5], b[6], b[7]]))),
            Err(nix::Error::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The names of every interface.
    fn names(&mut self) -> nix::Result<Vec<String>> {
        let replies = self.call(libc::RTM_GETLINK, libc::NLM_F_DUMP as u16, &ifinfomsg(0, 0, 0))?;
        Ok(replies
            .iter()
            .filter(|(k, b)| *k == libc::RTM_NEWLINK && b.len() >= 16)
            .filter_map(|(_, b)| {
                let name = attrs(b, 16).get(&IFLA_IFNAME)?.to_vec();
                Some(String::from_utf8_lossy(&name).trim_end_matches('\0').to_string())
            })
            .collect())
    }

    fn set_up(&mut self, index: i32, up: bool) -> nix::Result<()> {
        let flags = if up { libc::IFF_UP as u32 } else { 0 };
        self.call(libc::RTM_NEWLINK, 0, &ifinfomsg(index, flags, libc::IFF_UP as u32)).map(|_| ())
    }

    /// The permanent addresses of global scope of interface `index`: those a
    /// move between namespaces drops and that belong to the device's user.
    fn addresses(&mut self, index: i32) -> nix::Result<Vec<Address>> {
        let replies =
            self.call(libc::RTM_GETADDR, libc::NLM_F_DUMP as u16, &[libc::AF_UNSPEC as u8, 0, 0, 0, 0, 0, 0, 0])?;
        Ok(replies
            .iter()
            .filter(|(k, b)| *k == libc::RTM_NEWADDR && b.len() >= 8)
            .filter(|(_, b)| u32::from_ne_bytes([b[4], b[5], b[6], b[7]]) as i32 == index)
            .filter_map(|(_, b)| {
                let a = attrs(b, 8);
                let flags = a
                    .get(&IFA_FLAGS)
                    .filter(|f| f.len() == 4)
                    .map_or(u32::from(b[2]), |f| u32::from_ne_bytes([f[0], f[1], f[2], f[3]]));
                let addr = a.get(&IFA_LOCAL).or_else(|| a.get(&IFA_ADDRESS))?.to_vec();
                (flags & IFA_F_PERMANENT != 0 && b[3] == RT_SCOPE_UNIVERSE).then_some(Address {
                    family: b[0],
                    prefix: b[1],
                    addr,
                })
            })
            .collect())
    }

    fn add_address(&mut self, index: i32, a: &Address) -> nix::Result<()> {
        self.add_address_flags(index, a, 0)
    }

    fn add_address_flags(&mut self, index: i32, a: &Address, flags: u8) -> nix::Result<()> {
        let mut body = vec![a.family, a.prefix, flags, RT_SCOPE_UNIVERSE];
        body.extend_from_slice(&(index as u32).to_ne_bytes());
        attr(&mut body, IFA_LOCAL, &a.addr);
        attr(&mut body, IFA_ADDRESS, &a.addr);
        let flags = (libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16;
        self.call(libc::RTM_NEWADDR, flags, &body).map(|_| ())
    }

    /// Moves interface `index` into the namespace open at `netns`, named
    /// `name` there, in one request (so the name is never taken meanwhile).
    fn move_to(&mut self, index: i32, name: &str, netns: BorrowedFd<'_>) -> nix::Result<()> {
        let mut body = ifinfomsg(index, 0, 0);
        attr(&mut body, IFLA_IFNAME, format!("{name}\0").as_bytes());
        attr(&mut body, IFLA_NET_NS_FD, &(netns.as_raw_fd() as u32).to_ne_bytes());
        self.call(libc::RTM_NEWLINK, 0, &body).map(|_| ())
    }
}

/// Checks an interface name as the kernel would take it.
fn check_name(name: &str, field: &str) -> Result<()> {
    let bad = name.is_empty()
        || name.len() >= libc::IFNAMSIZ
        || name == "."
        || name == ".."
        || name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace() || c == '\0');
    if bad {
        return Err(Error::config(field, format!("{name:?} is not a valid interface name")));
    }
    Ok(())
}

/// The devices `linux.netDevices` asks for, checked: (name in the runtime's
/// namespace, name in the container's), sorted by the former.
pub fn planned(devices: &HashMap<String, LinuxNetDevice>) -> Result<Vec<(String, String)>> {
    let mut plan: Vec<(String, String)> = devices
        .iter()
        .map(|(host, d)| {
            let field = format!("linux.netDevices.{host}");
            check_name(host, &field)?;
            let inside = d.name().clone().filter(|n| !n.is_empty()).unwrap_or_else(|| host.clone());
            check_name(&inside, &format!("{field}.name"))?;
            Ok((host.clone(), inside))
        })
        .collect::<Result<_>>()?;
    plan.sort();
    for w in plan.windows(2) {
        if w[0].1 == w[1].1 {
            return Err(Error::config(
                format!("linux.netDevices.{}.name", w[1].0),
                format!("{:?} is also the name given to {}", w[1].1, w[0].0),
            ));
        }
    }
    Ok(plan)
}

/// One device moved from the namespace of `from` to the one at `to`: down
/// first, moved and renamed at once, its addresses again, up.
fn move_device(from: &mut Rtnl, to: &mut Rtnl, to_ns: BorrowedFd<'_>, name: &str, new_name: &str) -> Result<()> {
    let what = format!("network device {name}");
    let index = from
        .index_of(name)
        .map_err(|e| Error::sys("rtnetlink", &what, e))?
        .ok_or_else(|| Error::Init(format!("{what} is gone")))?;
    let addresses = from.addresses(index).map_err(|e| Error::sys("rtnetlink", format!("addresses of {name}"), e))?;
    from.set_up(index, false).map_err(|e| Error::sys("rtnetlink", format!("set {name} down"), e))?;
    from.move_to(index, new_name, to_ns)
        .map_err(|e| Error::sys("rtnetlink", format!("move {name} as {new_name}"), e))?;
    let moved = to
        .index_of(new_name)
        .map_err(|e| Error::sys("rtnetlink", new_name, e))?
        .ok_or_else(|| Error::Init(format!("network device {new_name} is not where it was moved")))?;
    for a in &addresses {
        match to.add_address(moved, a) {
            Ok(()) | Err(nix::Error::EEXIST) => {}
            Err(e) => return Err(Error::sys("rtnetlink", format!("address {:?} of {new_name}", a.addr), e)),
        }
    }
    to.set_up(moved, true).map_err(|e| Error::sys("rtnetlink", format!("set {new_name} up"), e))
}

/// Moves the planned devices into the network namespace open at `netns`.
/// Nothing is moved unless every device exists and no name is taken there;
/// a failure part-way moves back what was moved.
pub fn attach(plan: &[(String, String)], netns: BorrowedFd<'_>) -> Result<()> {
    if plan.is_empty() {
        return Ok(());
    }
    let mut here = Rtnl::open()?;
    let mut there = Rtnl::open_in(netns)?;
    for (host, _) in plan {
        if here.index_of(host).map_err(|e| Error::sys("rtnetlink", host, e))?.is_none() {
            return Err(Error::config(
                format!("linux.netDevices.{host}"),
                "no such device in the runtime's network namespace",
            ));
        }
    }
    let taken = there.names().map_err(|e| Error::sys("rtnetlink", "the container's devices", e))?;
    if let Some((host, inside)) = plan.iter().find(|(_, inside)| taken.contains(inside)) {
        return Err(Error::config(
            format!("linux.netDevices.{host}.name"),
            format!("the container's network namespace has a device called {inside} already"),
        ));
    }
    let own =
        std::fs::File::open("/proc/thread-self/ns/net").map_err(|e| Error::io("open", "own network namespace", e))?;
    for (done, (host, inside)) in plan.iter().enumerate() {
        if let Err(e) = move_device(&mut here, &mut there, netns, host, inside) {
            for (h, i) in plan[..done].iter().rev() {
                let _ = move_device(&mut there, &mut here, own.as_fd(), i, h);
            }
            return Err(e);
        }
    }
    Ok(())
}

/// Moves the planned devices from the network namespace open at `netns`
/// back into the runtime's, under their own names; returns what could not be
/// moved back, in words.
pub fn detach(plan: &[(String, String)], netns: BorrowedFd<'_>) -> Vec<String> {
    if plan.is_empty() {
        return Vec::new();
    }
    let (mut here, mut there) = match (Rtnl::open(), Rtnl::open_in(netns)) {
        (Ok(h), Ok(t)) => (h, t),
        (Err(e), _) | (_, Err(e)) => return vec![format!("network devices not moved back: {e}")],
    };
    let Ok(own) = std::fs::File::open("/proc/thread-self/ns/net") else {
        return vec!["network devices not moved back: cannot open the runtime's network namespace".into()];
    };
    plan.iter()
        .filter_map(|(host, inside)| {
            move_device(&mut there, &mut here, own.as_fd(), inside, host)
                .err()
                .map(|e| format!("network device {inside} not moved back as {host}: {e}"))
        })
        .collect()
}

// Handing a network namespace's network to a VM, and taking it over in the
// guest. A pod's namespace (a CNI plugin's work) has one interface with
// IPv4 and/or IPv6 addresses and default routes; the VM's NIC is a tap
// device bridged with that interface, and the guest's interface takes the
// addresses, so the pod's traffic reaches the guest as it would the
// namespace.

const IFLA_MTU: u16 = 4;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_TABLE: u16 = 15;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_BOOT: u8 = 3;
const RTN_UNICAST: u8 = 1;
const NLA_F_NESTED: u16 = 0x8000;

/// The names the handed-over namespace gets for the VM's side.
const VM_BRIDGE: &str = "strata-br";
const VM_TAP: &str = "strata-tap";

/// An interface's configuration, as a VM's guest takes it over.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VmInterface {
    /// The namespace's interface (and the guest's name for its own).
    pub name: String,
    /// Its permanent addresses of global scope, IPv4 and IPv6, with their
    /// prefix lengths.
    pub addresses: Vec<(std::net::IpAddr, u8)>,
    /// The IPv4 default route's gateway, if there is one.
    pub gateway: Option<std::net::Ipv4Addr>,
    /// The IPv6 default route's gateway, if there is one.
    pub gateway6: Option<std::net::Ipv6Addr>,
    pub mtu: u32,
}

impl Address {
    fn of(ip: std::net::IpAddr, prefix: u8) -> Address {
        match ip {
            std::net::IpAddr::V4(a) => Address { family: libc::AF_INET as u8, prefix, addr: a.octets().to_vec() },
            std::net::IpAddr::V6(a) => Address { family: libc::AF_INET6 as u8, prefix, addr: a.octets().to_vec() },
        }
    }

    fn ip(&self) -> Option<std::net::IpAddr> {
        match self.addr.len() {
            4 => <[u8; 4]>::try_from(self.addr.as_slice()).ok().map(std::net::IpAddr::from),
            16 => <[u8; 16]>::try_from(self.addr.as_slice()).ok().map(std::net::IpAddr::from),
            _ => None,
        }
    }
}

impl Rtnl {
    fn mtu(&mut self, index: i32) -> nix::Result<Option<u32>> {
        let replies = self.call(libc::RTM_GETLINK, 0, &ifinfomsg(index, 0, 0))?;
        Ok(replies.iter().filter(|(k, b)| *k == libc::RTM_NEWLINK && b.len() >= 16).find_map(|(_, b)| {
            attrs(b, 16).get(&IFLA_MTU).filter(|m| m.len() == 4).map(|m| u32::from_ne_bytes([m[0], m[1], m[2], m[3]]))
        }))
    }

    fn set_link_u32(&mut self, index: i32, kind: u16, value: u32) -> nix::Result<()> {
        let mut body = ifinfomsg(index, 0, 0);
        attr(&mut body, kind, &value.to_ne_bytes());
        self.call(libc::RTM_NEWLINK, 0, &body).map(|_| ())
    }

    fn add_bridge(&mut self, name: &str) -> nix::Result<()> {
        let mut body = ifinfomsg(0, 0, 0);
        attr(&mut body, IFLA_IFNAME, format!("{name}\0").as_bytes());
        let mut info = Vec::new();
        attr(&mut info, IFLA_INFO_KIND, b"bridge");
        attr(&mut body, IFLA_LINKINFO | NLA_F_NESTED, &info);
        self.call(libc::RTM_NEWLINK, (libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16, &body).map(|_| ())
    }

    fn delete_address(&mut self, index: i32, a: &Address) -> nix::Result<()> {
        let mut body = vec![a.family, a.prefix, 0, RT_SCOPE_UNIVERSE];
        body.extend_from_slice(&(index as u32).to_ne_bytes());
        attr(&mut body, IFA_LOCAL, &a.addr);
        self.call(libc::RTM_DELADDR, 0, &body).map(|_| ())
    }

    /// The gateway of the main table's default route of `family`.
    fn default_gateway(&mut self, family: u8) -> nix::Result<Option<std::net::IpAddr>> {
        let mut rtmsg = vec![0u8; 12];
        rtmsg[0] = family;
        let replies = self.call(libc::RTM_GETROUTE, libc::NLM_F_DUMP as u16, &rtmsg)?;
        Ok(replies.iter().filter(|(k, b)| *k == libc::RTM_NEWROUTE && b.len() >= 12).find_map(|(_, b)| {
            let a = attrs(b, 12);
            let table = a
                .get(&RTA_TABLE)
                .filter(|t| t.len() == 4)
                .map_or(u32::from(b[4]), |t| u32::from_ne_bytes([t[0], t[1], t[2], t[3]]));
            let gw = Address { family, prefix: 0, addr: a.get(&RTA_GATEWAY)?.to_vec() }.ip()?;
            (b[0] == family && b[1] == 0 && table == u32::from(RT_TABLE_MAIN)).then_some(gw)
        }))
    }

    fn add_default_route(&mut self, index: i32, gateway: std::net::IpAddr) -> nix::Result<()> {
        let (family, gw) = match gateway {
            std::net::IpAddr::V4(g) => (libc::AF_INET as u8, g.octets().to_vec()),
            std::net::IpAddr::V6(g) => (libc::AF_INET6 as u8, g.octets().to_vec()),
        };
        let mut body = vec![family, 0, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST, 0, 0, 0, 0];
        attr(&mut body, RTA_GATEWAY, &gw);
        attr(&mut body, RTA_OIF, &(index as u32).to_ne_bytes());
        self.call(libc::RTM_NEWROUTE, (libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16, &body).map(|_| ())
    }

    /// Both default routes' gateways.
    fn default_gateways(&mut self) -> nix::Result<(Option<std::net::Ipv4Addr>, Option<std::net::Ipv6Addr>)> {
        let v4 = match self.default_gateway(libc::AF_INET as u8)? {
            Some(std::net::IpAddr::V4(g)) => Some(g),
            _ => None,
        };
        let v6 = match self.default_gateway(libc::AF_INET6 as u8)? {
            Some(std::net::IpAddr::V6(g)) => Some(g),
            _ => None,
        };
        Ok((v4, v6))
    }

    /// Gives interface `index` the addresses and default routes of `i`
    /// (what is there already is kept). New IPv6 addresses skip duplicate
    /// address detection: they were the namespace's a moment ago.
    fn configure(&mut self, index: i32, i: &VmInterface, what: &str) -> Result<()> {
        let fail = |step: &str, e: nix::Error| Error::sys("rtnetlink", format!("{what}: {step}"), e);
        for (ip, prefix) in &i.addresses {
            match self.add_address_flags(index, &Address::of(*ip, *prefix), IFA_F_NODAD) {
                Ok(()) | Err(nix::Error::EEXIST) => {}
                Err(e) => return Err(fail(&format!("address {ip}/{prefix}"), e)),
            }
        }
        self.set_up(index, true).map_err(|e| fail("up", e))?;
        let gateways = [i.gateway.map(std::net::IpAddr::V4), i.gateway6.map(std::net::IpAddr::V6)];
        for gw in gateways.into_iter().flatten() {
            match self.add_default_route(index, gw) {
                Ok(()) | Err(nix::Error::EEXIST) => {}
                Err(e) => return Err(fail(&format!("default route via {gw}"), e)),
            }
        }
        Ok(())
    }
}

/// A tap device called `name` made in the network namespace open at
/// `netns` (by a thread that joins it); its descriptor.
fn tap_in(netns: BorrowedFd<'_>, name: &str) -> Result<OwnedFd> {
    let ns = netns.try_clone_to_owned().map_err(|e| Error::io("dup", "network namespace", e))?;
    let name = name.to_string();
    std::thread::spawn(move || -> Result<OwnedFd> {
        nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| Error::sys("setns", "the VM's network namespace", e))?;
        let tun = nix::fcntl::open(
            "/dev/net/tun",
            nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| Error::sys("open", "/dev/net/tun", e))?;
        // SAFETY: open returned a new descriptor that nothing else owns.
        let tun = unsafe { OwnedFd::from_raw_fd(tun) };
        // struct ifreq: the name, then the flags (a short) in the union.
        let mut ifr = [0u8; 40];
        ifr[..name.len()].copy_from_slice(name.as_bytes());
        let flags = (libc::IFF_TAP | libc::IFF_NO_PI) as i16;
        ifr[16..18].copy_from_slice(&flags.to_ne_bytes());
        // SAFETY: TUNSETIFF reads and writes the 40-byte ifreq it is given.
        if unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, ifr.as_mut_ptr()) } != 0 {
            return Err(Error::sys("ioctl TUNSETIFF", &name, nix::Error::last()));
        }
        Ok(tun)
    })
    .join()
    .map_err(|_| Error::Init("the thread making the VM's tap device panicked".into()))?
}

/// Hands the network of the namespace open at `netns` to a VM: a tap device
/// (whose descriptor is returned) is bridged with the namespace's interface,
/// whose addresses (IPv4 and IPv6) move off it for the guest to take. None
/// when the namespace has no interface with a permanent global address
/// (nothing to hand over).
pub fn hand_to_vm(netns: BorrowedFd<'_>) -> Result<Option<(VmInterface, OwnedFd)>> {
    let mut rt = Rtnl::open_in(netns)?;
    let fail = |what: &str, e: nix::Error| Error::sys("rtnetlink", format!("the VM's network: {what}"), e);
    let mut found = None;
    for name in rt.names().map_err(|e| fail("interfaces", e))? {
        if name == "lo" || name == VM_BRIDGE || name == VM_TAP {
            continue;
        }
        let Some(index) = rt.index_of(&name).map_err(|e| fail(&name, e))? else { continue };
        let addresses: Vec<Address> =
            rt.addresses(index).map_err(|e| fail(&name, e))?.into_iter().filter(|a| a.ip().is_some()).collect();
        if !addresses.is_empty() {
            found = Some((name, index, addresses));
            break;
        }
    }
    let Some((name, index, addresses)) = found else { return Ok(None) };
    let mtu = rt.mtu(index).map_err(|e| fail(&name, e))?.unwrap_or(1500);
    let (gateway, gateway6) = rt.default_gateways().map_err(|e| fail("the default routes", e))?;
    let handed = VmInterface {
        name: name.clone(),
        addresses: addresses.iter().filter_map(|a| Some((a.ip()?, a.prefix))).collect(),
        gateway,
        gateway6,
        mtu,
    };
    let made = (|| -> Result<OwnedFd> {
        let tap = tap_in(netns, VM_TAP)?;
        let tap_index = rt
            .index_of(VM_TAP)
            .map_err(|e| fail(VM_TAP, e))?
            .ok_or_else(|| Error::Init(format!("{VM_TAP} is not where it was made")))?;
        rt.set_link_u32(tap_index, IFLA_MTU, mtu).map_err(|e| fail("the tap's MTU", e))?;
        rt.add_bridge(VM_BRIDGE).map_err(|e| fail(VM_BRIDGE, e))?;
        let bridge = rt
            .index_of(VM_BRIDGE)
            .map_err(|e| fail(VM_BRIDGE, e))?
            .ok_or_else(|| Error::Init(format!("{VM_BRIDGE} is not where it was made")))?;
        for a in &addresses {
            rt.delete_address(index, a).map_err(|e| fail(&format!("the addresses of {name}"), e))?;
        }
        for port in [index, tap_index] {
            rt.set_link_u32(port, IFLA_MASTER, bridge as u32).map_err(|e| fail("a bridge port", e))?;
        }
        for i in [bridge, tap_index, index] {
            rt.set_up(i, true).map_err(|e| fail("up", e))?;
        }
        Ok(tap)
    })();
    match made {
        Ok(tap) => Ok(Some((handed, tap))),
        Err(e) => {
            // Half made: the namespace gets back what was taken (the tap
            // went with its descriptor).
            let _ = give_back(netns, &handed);
            Err(e)
        }
    }
}

/// Gives back what [`hand_to_vm`] took, once the VM is gone: the bridge goes
/// (the tap went with the VM's descriptor), and the interface gets its
/// addresses and default routes again. Best effort: a namespace already
/// gone (a pod's, removed with it) has nothing to give back to.
pub fn give_back(netns: BorrowedFd<'_>, i: &VmInterface) -> Result<()> {
    let mut rt = Rtnl::open_in(netns)?;
    let fail = |what: &str, e: nix::Error| Error::sys("rtnetlink", format!("giving the network back: {what}"), e);
    if let Some(bridge) = rt.index_of(VM_BRIDGE).map_err(|e| fail(VM_BRIDGE, e))? {
        rt.call(libc::RTM_DELLINK, 0, &ifinfomsg(bridge, 0, 0)).map_err(|e| fail(VM_BRIDGE, e))?;
    }
    let Some(index) = rt.index_of(&i.name).map_err(|e| fail(&i.name, e))? else { return Ok(()) };
    rt.configure(index, i, "giving the network back")
}

/// In a VM's guest: gives the interface the host handed over (the guest's
/// only NIC, `eth0`, called as it was on the host) its addresses, MTU and
/// default routes, and brings it and the loopback up. Waits up to 5 s for the
/// NIC to appear.
pub fn take_over(i: &VmInterface, nic: &str) -> Result<()> {
    let mut rt = Rtnl::open()?;
    let fail = |what: &str, e: nix::Error| Error::sys("rtnetlink", format!("the guest's network: {what}"), e);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let index = loop {
        if let Some(index) = rt.index_of(nic).map_err(|e| fail(nic, e))? {
            break index;
        }
        if std::time::Instant::now() > deadline {
            return Err(Error::Init(format!("the guest has no network interface {nic}")));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    rt.set_up(LOOPBACK_INDEX, true).map_err(|e| fail("lo up", e))?;
    let mut index = index;
    if nic != i.name {
        let mut body = ifinfomsg(index, 0, 0);
        attr(&mut body, IFLA_IFNAME, format!("{}\0", i.name).as_bytes());
        rt.call(libc::RTM_NEWLINK, 0, &body).map_err(|e| fail(&format!("rename {nic} to {}", i.name), e))?;
        index = rt
            .index_of(&i.name)
            .map_err(|e| fail(&i.name, e))?
            .ok_or_else(|| Error::Init(format!("{} is gone", i.name)))?;
    }
    rt.set_link_u32(index, IFLA_MTU, i.mtu).map_err(|e| fail("MTU", e))?;
    rt.configure(index, i, "the guest's network")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_of_both_families_keep_their_bytes_through_the_guest_config() {
        let i = VmInterface {
            name: "eth0".into(),
            addresses: vec![("10.88.0.7".parse().expect("v4"), 16), ("fd00:88::7".parse().expect("v6"), 64)],
            gateway: Some("10.88.0.1".parse().expect("gw")),
            gateway6: Some("fe80::1".parse().expect("gw6")),
            mtu: 1450,
        };
        let back: VmInterface = serde_json::from_value(serde_json::to_value(&i).expect("json")).expect("parse");
        assert_eq!(back, i);
        let rtnl: Vec<Address> = i.addresses.iter().map(|(ip, p)| Address::of(*ip, *p)).collect();
        assert_eq!((rtnl[0].family, rtnl[0].addr.len()), (libc::AF_INET as u8, 4));
        assert_eq!((rtnl[1].family, rtnl[1].addr.len(), rtnl[1].prefix), (libc::AF_INET6 as u8, 16, 64));
        let ips: Vec<_> = rtnl.iter().map(Address::ip).collect();
        assert_eq!(ips, i.addresses.iter().map(|(ip, _)| Some(*ip)).collect::<Vec<_>>());
        assert_eq!(Address { family: 0, prefix: 0, addr: vec![1, 2, 3] }.ip(), None);
    }
}
