-- Wireshark dissector for vipcast's envelope protocol (docs/protocol.md, "Envelope").
--
--   tshark -X lua_script:vipcast.lua -r capture.pcap
--   wireshark: copy to ~/.local/lib/wireshark/plugins/ (or /usr/lib/x86_64-linux-gnu/
--   wireshark/plugins/), or run it with -X lua_script:vipcast.lua
--
-- Registered on UDP port 8601 (cluster.port; preference vipcast.port, e.g.
-- `-o vipcast.port:9601`), and as a heuristic on UDP for envelopes on other ports.
-- Versions 1.0, 1.1 (the auth block of authenticated messages) and 1.2 (the fencing
-- term) are read by the header length and the minor version; fields a later minor
-- appends are shown as bytes. Each DATA record's payload is handed to the dissector
-- of its destination port (udp.port table: ASTERIX on 8600 decodes as ASTERIX).
-- Tested by tests/integration/test_wireshark_dissector.py on a lab capture.

local vipcast = Proto("vipcast", "vipcast envelope")

local TYPES = { [1] = "DATA", [2] = "HEARTBEAT", [3] = "END_OF_SESSION", [4] = "NACK",
                [5] = "UNAVAILABLE" }
local REASONS = { [0] = "unspecified", [1] = "evicted", [2] = "not sent",
                  [3] = "unknown session" }
-- header size of each type in version 1.0: the common header and the type's fields
local FIXED = { [1] = 32, [2] = 28, [3] = 36, [4] = 32, [5] = 36 }
local COMMON, AUTH_BLOCK, TERM, TAG = 20, 12, 8, 16
local FLAG_AUTH, FLAG_RETRANSMISSION, FLAG_CLOSING = 0x01, 0x02, 0x04
local DEFAULT_PORT = 8601

local f = vipcast.fields
f.magic = ProtoField.string("vipcast.magic", "Magic")
f.version = ProtoField.uint8("vipcast.version", "Version", base.HEX)
f.major = ProtoField.uint8("vipcast.version.major", "Major", base.DEC, nil, 0xF0)
f.minor = ProtoField.uint8("vipcast.version.minor", "Minor", base.DEC, nil, 0x0F)
f.type = ProtoField.uint8("vipcast.type", "Type", base.DEC, TYPES)
f.hlen = ProtoField.uint8("vipcast.hlen", "Header length", base.DEC)
f.flags = ProtoField.uint8("vipcast.flags", "Flags", base.HEX)
f.flag_auth = ProtoField.bool("vipcast.flags.auth", "AUTH", 8, nil, FLAG_AUTH)
f.flag_retx = ProtoField.bool("vipcast.flags.retransmission", "RETRANSMISSION", 8, nil,
                              FLAG_RETRANSMISSION)
f.flag_closing = ProtoField.bool("vipcast.flags.closing", "CLOSING", 8, nil, FLAG_CLOSING)
f.feed = ProtoField.uint16("vipcast.feed", "Feed id", base.DEC)
f.node = ProtoField.uint32("vipcast.node", "Node id", base.DEC)
f.session = ProtoField.uint64("vipcast.session", "Session", base.HEX)
f.first_seq = ProtoField.uint64("vipcast.first_seq", "First sequence", base.DEC)
f.last_seq = ProtoField.uint64("vipcast.last_seq", "Last sequence", base.DEC)
f.next_session = ProtoField.uint64("vipcast.next_session", "Next session", base.HEX)
f.count = ProtoField.uint32("vipcast.count", "Count", base.DEC)
f.reason = ProtoField.uint8("vipcast.reason", "Reason", base.DEC, REASONS)
f.key_id = ProtoField.uint8("vipcast.auth.key_id", "Key id", base.DEC)
f.counter = ProtoField.uint64("vipcast.auth.counter", "Counter", base.HEX)
f.term = ProtoField.uint64("vipcast.term", "Term", base.DEC)
f.unknown = ProtoField.bytes("vipcast.unknown", "Header fields of a later minor version")
f.tag = ProtoField.bytes("vipcast.auth.tag", "Tag (HMAC-SHA256, 16 bytes)")
f.record = ProtoField.none("vipcast.record", "Record")
f.seq = ProtoField.uint64("vipcast.record.seq", "Sequence", base.DEC)
f.ingress = ProtoField.absolute_time("vipcast.record.ingress", "Ingress time", base.UTC)
f.plen = ProtoField.uint16("vipcast.record.length", "Payload length", base.DEC)
f.family = ProtoField.uint8("vipcast.record.family", "Family", base.DEC)
f.srcport = ProtoField.uint16("vipcast.record.srcport", "Source port", base.DEC)
f.dstport = ProtoField.uint16("vipcast.record.dstport", "Destination port", base.DEC)
f.src = ProtoField.ipv4("vipcast.record.src", "Source address")
f.dst = ProtoField.ipv4("vipcast.record.dst", "Destination address")
f.src6 = ProtoField.ipv6("vipcast.record.src6", "Source address")
f.dst6 = ProtoField.ipv6("vipcast.record.dst6", "Destination address")
f.payload = ProtoField.bytes("vipcast.record.payload", "Payload")

local malformed = ProtoExpert.new("vipcast.malformed", "Malformed envelope",
                                  expert.group.MALFORMED, expert.severity.ERROR)
vipcast.experts = { malformed }

vipcast.prefs.port = Pref.uint("Cluster UDP port", DEFAULT_PORT,
                               "cluster.port: where receivers listen and send NACKs from")
vipcast.prefs.payloads = Pref.bool("Dissect payloads", true,
                                   "hand each record's payload to its destination port's dissector")

local udp_port = DissectorTable.get("udp.port")
local registered_port = nil

local function register_port()
    if registered_port ~= nil then
        udp_port:remove(registered_port, vipcast)
    end
    registered_port = vipcast.prefs.port
    udp_port:add(registered_port, vipcast)
end

function vipcast.prefs_changed()
    if registered_port ~= vipcast.prefs.port then
        register_port()
    end
end

local function bad(item, text)
    item:add_proto_expert_info(malformed, text)
end

-- The header after the common one: the type's 1.0 fields, then the auth block (1.1+,
-- AUTH), the term (1.2+), then fields of later minors. Returns first sequence and count.
local function header_fields(tvb, tree, kind, minor, auth, hlen)
    local first, count
    if kind == 1 then
        tree:add(f.first_seq, tvb(20, 8)); tree:add(f.count, tvb(28, 2))
        first, count = tvb(20, 8):uint64(), tvb(28, 2):uint()
    elseif kind == 2 then
        tree:add(f.last_seq, tvb(20, 8))
    elseif kind == 3 then
        tree:add(f.last_seq, tvb(20, 8)); tree:add(f.next_session, tvb(28, 8))
    else -- NACK, UNAVAILABLE
        tree:add(f.first_seq, tvb(20, 8)); tree:add(f.count, tvb(28, 4))
        first, count = tvb(20, 8):uint64(), tvb(28, 4):uint()
        if kind == 5 then tree:add(f.reason, tvb(32, 1)) end
    end
    local at = FIXED[kind]
    if auth and minor >= 1 and hlen >= at + AUTH_BLOCK then
        local block = tree:add(vipcast, tvb(at, AUTH_BLOCK), "Auth block")
        block:add(f.key_id, tvb(at, 1)); block:add(f.counter, tvb(at + 4, 8))
        at = at + AUTH_BLOCK
    end
    if minor >= 2 and hlen >= at + TERM then
        tree:add(f.term, tvb(at, TERM))
        at = at + TERM
    end
    if hlen > at then tree:add(f.unknown, tvb(at, hlen - at)) end
    return first, count
end

local function ingress_time(ns)
    local secs = (ns / 1000000000):tonumber()
    return NSTime.new(secs, (ns - UInt64.new(secs) * 1000000000):tonumber())
end

-- One DATA record at offset r (before the body's end): its tree, its payload handed on.
local function record(tvb, pinfo, root, tree, r, stop, seq)
    local family = r + 11 <= stop and tvb(r + 10, 1):uint() or 0
    local asize = family == 6 and 16 or 4
    local fixed = 16 + 2 * asize
    if r + fixed > stop then
        bad(tree:add(f.record, tvb(r, stop - r)), "truncated record")
        return stop
    end
    local plen = tvb(r + 8, 2):uint()
    if r + fixed + plen > stop then
        bad(tree:add(f.record, tvb(r, stop - r)), "truncated payload")
        return stop
    end
    local src_field, dst_field = f.src, f.dst
    if family == 6 then src_field, dst_field = f.src6, f.dst6 end
    local src = family == 6 and tvb(r + 16, 16):ipv6() or tvb(r + 16, 4):ipv4()
    local dst = family == 6 and tvb(r + 16 + asize, 16):ipv6() or tvb(r + 16 + asize, 4):ipv4()
    local sport, dport = tvb(r + 12, 2):uint(), tvb(r + 14, 2):uint()
    local item = tree:add(f.record, tvb(r, fixed + plen))
    item:set_text(string.format("Record, sequence %s: %s:%d -> %s:%d, %d bytes",
                                tostring(seq), tostring(src), sport, tostring(dst), dport, plen))
    item:add(f.seq, seq):set_generated()
    item:add(f.ingress, tvb(r, 8), ingress_time(tvb(r, 8):uint64()))
    item:add(f.plen, tvb(r + 8, 2))
    local fam = item:add(f.family, tvb(r + 10, 1))
    if family ~= 4 and family ~= 6 then bad(fam, "family neither 4 nor 6") end
    item:add(f.srcport, tvb(r + 12, 2)); item:add(f.dstport, tvb(r + 14, 2))
    item:add(src_field, tvb(r + 16, asize)); item:add(dst_field, tvb(r + 16 + asize, asize))
    if plen > 0 then
        local body = tvb(r + fixed, plen)
        item:add(f.payload, body)
        if vipcast.prefs.payloads then
            udp_port:try(dport, body:tvb(), pinfo, root)
        end
    end
    return r + fixed + plen
end

local function records(tvb, pinfo, root, tree, hlen, stop, first, count)
    local r = hlen
    for i = 0, count - 1 do
        if r >= stop then
            bad(tree, string.format("%d records announced, %d found", count, i))
            return
        end
        r = record(tvb, pinfo, root, tree, r, stop, first + i)
    end
    if r ~= stop then bad(tree, "bytes left after the last record") end
end

local function info(kind, feed, node, session, first, count, flags)
    local text = string.format("%s feed %d node %d session 0x%s", TYPES[kind], feed, node,
                               session:tohex())
    if first ~= nil then
        text = text .. string.format(" seq %s", tostring(first))
        if count > 1 then text = text .. string.format("-%s", tostring(first + count - 1)) end
    end
    if bit.band(flags, FLAG_RETRANSMISSION) ~= 0 then text = text .. " [retransmission]" end
    if bit.band(flags, FLAG_CLOSING) ~= 0 then text = text .. " [closing]" end
    return text
end

function vipcast.dissector(tvb, pinfo, root)
    local size = tvb:len()
    if size < COMMON or tvb(0, 2):string() ~= "VC" then return 0 end
    pinfo.cols.protocol = "vipcast"
    local tree = root:add(vipcast, tvb())
    tree:add(f.magic, tvb(0, 2))
    local v = tree:add(f.version, tvb(2, 1))
    v:add(f.major, tvb(2, 1)); v:add(f.minor, tvb(2, 1))
    local version, kind = tvb(2, 1):uint(), tvb(3, 1):uint()
    local major, minor = bit.rshift(version, 4), bit.band(version, 0x0F)
    local kind_item = tree:add(f.type, tvb(3, 1))
    local hlen_item = tree:add(f.hlen, tvb(4, 1))
    local flags = tvb(5, 1):uint()
    local fl = tree:add(f.flags, tvb(5, 1))
    fl:add(f.flag_auth, tvb(5, 1)); fl:add(f.flag_retx, tvb(5, 1)); fl:add(f.flag_closing, tvb(5, 1))
    tree:add(f.feed, tvb(6, 2)); tree:add(f.node, tvb(8, 4)); tree:add(f.session, tvb(12, 8))
    local feed, node, session = tvb(6, 2):uint(), tvb(8, 4):uint(), tvb(12, 8):uint64()
    if major ~= 1 then
        bad(v, "unknown major version")
        return size
    end
    if FIXED[kind] == nil then
        bad(kind_item, "unknown message type")
        return size
    end
    local hlen = tvb(4, 1):uint()
    local auth = bit.band(flags, FLAG_AUTH) ~= 0
    local stop = auth and size - TAG or size
    if hlen < FIXED[kind] or hlen > stop then
        bad(hlen_item, "header length outside the type's size and the message")
        return size
    end
    local first, count = header_fields(tvb, tree, kind, minor, auth, hlen)
    tree:append_text(string.format(", %d.%d %s, session 0x%s", major, minor, TYPES[kind],
                                   session:tohex()))
    if kind == 1 then
        records(tvb, pinfo, root, tree, hlen, stop, first, count)
    elseif stop > hlen then
        bad(tree, "a body on a message that has none")
    end
    if auth then tree:add(f.tag, tvb(size - TAG, TAG)) end
    -- after the payloads' dissectors (their protocol names the packet, vipcast's summary
    -- is the Info)
    pinfo.cols.info = info(kind, feed, node, session, first, count or 0, flags)
    return size
end

local function heuristic(tvb, pinfo, root)
    if tvb:len() < COMMON or tvb(0, 2):string() ~= "VC" then return false end
    if bit.rshift(tvb(2, 1):uint(), 4) ~= 1 or FIXED[tvb(3, 1):uint()] == nil then return false end
    vipcast.dissector(tvb, pinfo, root)
    return true
end

register_port()
vipcast:register_heuristic("udp", heuristic)
