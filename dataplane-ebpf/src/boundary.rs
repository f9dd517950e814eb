//! The trust boundary: what each port's role admits (`pegasus_common::roles`), applied to
//! every request and reply before the directory or the cache sees it, and the drop of store
//! traffic the program cannot parse.

use crate::*;

/// 802.1Q and 802.1ad tags.
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;

/// The role of the port the packet arrived on: a port the controller did not name is a
/// client port.
#[inline(always)]
pub(crate) fn ingress_role(ctx: &XdpContext) -> PortRole {
    let ifindex = ctx.ingress_ifindex() as u32;
    match PORT_ROLES.get(switch::port_slot(ifindex)) {
        Some(slot) if slot.ifindex == ifindex => PortRole::from_u8(slot.role),
        _ => PortRole::Client,
    }
}

/// Applies the request rule. `Ok(stamp)`: forward (cleaned if the rule says so), stamping a
/// version when `stamp`; `Err(verdict)` ends the packet's processing.
#[inline(always)]
pub(crate) fn admit_request(
    frame: Headers,
    header: Header,
    role: PortRole,
    op: Op,
    stamp: bool,
    tally: Tally,
) -> Result<bool, u32> {
    match roles::admit_request(role, op, header.u16(offset::CLIENT_ID)) {
        RequestAdmission::Accept => Ok(stamp),
        RequestAdmission::Drop => {
            tally.add(Counter::RoleDrops);
            Err(XDP_DROP)
        }
        RequestAdmission::Clean => {
            let before = SwitchOnlyFields {
                version: header.u64(offset::VERSION),
                replica_bitmap: header.u64(offset::REPLICA_BITMAP),
                flags: header.u8(offset::FLAGS),
            };
            let after = roles::clean(op, before);
            if after != before {
                clean(frame, header, before, after);
                tally.add(Counter::RequestsCleaned);
            }
            // A client's write is always the switch's to order (a CHAIN_PUT never is).
            Ok(op.is_write())
        }
    }
}

/// Rewrites the switch-only fields, with one incremental update of the UDP checksum.
#[inline(always)]
fn clean(frame: Headers, header: Header, before: SwitchOnlyFields, after: SwitchOnlyFields) {
    // The server id and flags share one 16-bit checksum word.
    let old_word = header.u16(offset::SERVER_ID);
    let new_word = (old_word & 0xff00) | after.flags as u16;
    header.set_u16(offset::SERVER_ID, new_word);
    header.set_u64(offset::VERSION, after.version);
    header.set_u64(offset::REPLICA_BITMAP, after.replica_bitmap);
    let replaced = Replacements::NONE
        .u16(old_word, new_word)
        .u64(before.version, after.version)
        .u64(before.replica_bitmap, after.replica_bitmap);
    fix_udp_checksum(frame, |sum| replaced.apply(sum));
}

/// Applies the reply rule: the server table (for the reply's load and the directory, one
/// lookup for both) when the reply may speak for the server it claims; else `None`, counted.
#[inline(always)]
pub(crate) fn admit_reply(
    frame: Headers,
    header: Header,
    role: PortRole,
    op: Op,
    tally: Tally,
) -> Option<*mut ServerTable> {
    let servers = SERVERS.get_ptr_mut(0)?;
    let source = frame.u32(IP_OFF + ipv4::SRC).to_be_bytes();
    // SAFETY: a valid map value for the program's duration; only read here.
    let table = unsafe { &*servers };
    if roles::admit_reply(role, op, header.u8(offset::SERVER_ID), source, table) {
        Some(servers)
    } else {
        tally.add(Counter::RoleDrops);
        None
    }
}

/// For a frame that is not plain Ethernet/IPv4/UDP without options: true when it is UDP to
/// or from the store port all the same (behind a VLAN tag, after IP options, or a first
/// fragment), which the program will not forward unchecked. A later fragment carries no UDP
/// header; without its first fragment, which this drops, its datagram never completes.
#[inline(always)]
pub(crate) fn touches_store_port(ctx: &XdpContext, frame: Headers, store_port: u16) -> bool {
    let (l3, ethertype) = match frame.u16(12) {
        ETH_P_8021Q | ETH_P_8021AD => (ETH_HDR_LEN + 4, frame.u16(16)),
        ethertype => (ETH_HDR_LEN, ethertype),
    };
    let Some(ip) = Bytes::<{ IPV4_HDR_LEN }>::at(ctx, l3) else {
        return false;
    };
    if ethertype != ETH_P_IPV4
        || ip.u8(ipv4::PROTOCOL) != IPPROTO_UDP
        || ip.u16(ipv4::FRAG) & 0x1fff != 0
    {
        return false;
    }
    let header_len = (ip.u8(0) & 0x0f) as usize * 4;
    let mut ports = [0u8; 4];
    // SAFETY: the helper bounds-checks the offset and length against the packet.
    let loaded = unsafe {
        bpf_xdp_load_bytes(
            ctx.ctx as *mut _,
            (l3 + header_len) as u32,
            ports.as_mut_ptr() as *mut _,
            4,
        )
    };
    loaded == 0
        && (u16::from_be_bytes([ports[0], ports[1]]) == store_port
            || u16::from_be_bytes([ports[2], ports[3]]) == store_port)
}
