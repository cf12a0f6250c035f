#!lua name=rmq
--[[
rmq, the Lua edition: a reliable message queue as a Redis Functions library.

    FUNCTION LOAD REPLACE "$(cat lua/rmq.lua)"
    FCALL rmq_push 1 jobs hello
    FCALL rmq_fetch 1 jobs COUNT 10

Same contract, same keys and the same record bytes as the RMQ.* module (docs/commands.md,
docs/storage.md); only BLOCK differs: it is checked but never waits.

Keys of a queue q (every one carries the hash tag {q}, so a queue lives in one slot):

    msg:{q}  list   ready records; LPOP takes the next, RPUSH appends
    dly:{q}  zset   delayed records, score = due (unix ms)
    bak:{q}  zset   in flight: receipt -> lock deadline (unix ms)
    inf:{q}  hash   in flight: receipt -> record
    fai:{q}  list   failed (dead) records, oldest first
    err:{q}  list   errored records, oldest first
    cfg:{q}  hash   settings that differ from the defaults (name -> decimal)
    st:{q}   hash   offset retried dead errored dups removed, and hold (ordered queues)
    dup:{q}  zset   dedup window: producer id -> push time (unix ms)
    log:{q}  stream message log, only while the queue's `log` setting is 1

A record is cmsgpack.pack{id, body, tag, key, headers, created, attempt, offset,
deliveries, error, consumer} (headers a flat array; no field is ever nil).
A receipt is "<offset>-<deliveries>"; a server-made id is "<created>-<offset>".
]]

---------------------------------------------------------------------------------------
-- Constants
---------------------------------------------------------------------------------------

-- Record fields (1-based positions in the MessagePack array).
local ID, BODY, TAG, KEY, HEADERS, CREATED, ATTEMPT, OFFSET, DELIVERIES, ERROR, CONSUMER =
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11

-- The Lua type of each record field.
local RECORD_TYPES = { 'string', 'string', 'string', 'string', 'table', 'number', 'number',
    'number', 'number', 'string', 'string' }

-- SPEC.md's defaults; cfg:{q} overrides them.
local SETTING_NAMES = { 'lock-ms', 'max-attempts', 'backoff-ms', 'backoff-max-ms', 'maxlen',
    'ordered', 'dedup-window-ms', 'log', 'log-maxlen', 'paused' }
local DEFAULTS = {
    ['lock-ms'] = 30000, ['max-attempts'] = 5, ['backoff-ms'] = 1000,
    ['backoff-max-ms'] = 3600000, ['maxlen'] = 0, ['ordered'] = 0,
    ['dedup-window-ms'] = 3600000, ['log'] = 0, ['log-maxlen'] = 1000000, ['paused'] = 0,
}
-- 'pos': at least 1; 'nonneg': at least 0; 'bool': 0 or 1.
local SETTING_RULE = {
    ['lock-ms'] = 'pos', ['max-attempts'] = 'pos', ['log-maxlen'] = 'pos',
    ['backoff-ms'] = 'nonneg', ['backoff-max-ms'] = 'nonneg', ['maxlen'] = 'nonneg',
    ['dedup-window-ms'] = 'nonneg', ['ordered'] = 'bool', ['log'] = 'bool', ['paused'] = 'bool',
}

local MAX_FETCH_COUNT = 1000  -- the Lua edition's max-fetch-count

-- The node's defaults. Inside the module, the module's settings (`CONFIG SET rmq.*`), handed
-- over through redis.rmq_node_defaults; in Redis, which has no such function, SPEC's.
local function node_defaults()
    local f = redis.rmq_node_defaults
    if f then
        return f()
    end
    return DEFAULTS
end

local function max_fetch_count()
    return node_defaults()['max-fetch-count'] or MAX_FETCH_COUNT
end
local MAX_NUMBER = 1e15       -- the largest number any argument may hold
local MAX_HEADERS = 1000      -- HEADERs one message may carry
local QUARANTINE_LIMIT = 1000 -- undecodable records one FETCH moves to errors beyond COUNT
local BATCH = 1000            -- FETCH promotes / reclaims at most this many
local DEDUP_TRIM = 16         -- expired dedup entries removed by each PUSH with ID

local MSG_NUM = {
    LOCK = 'LOCK must be a positive integer of milliseconds',
    DELAY = 'DELAY must be a non-negative integer of milliseconds',
    AT = 'AT must be a non-negative integer of unix milliseconds',
    BLOCK = 'BLOCK must be a non-negative integer of milliseconds',
    COUNT = 'COUNT must be a positive integer',
    START = 'START must be a non-negative integer',
    FROM = 'FROM must be a non-negative integer',
    TO = 'TO must be a non-negative integer',
}

-- The state keywords of PEEK and PURGE -> state names.
local STATE_KEYWORDS = { READY = 'ready', DELAYED = 'delayed', INFLIGHT = 'inflight',
    FAILED = 'failed', ERRORS = 'errors' }

---------------------------------------------------------------------------------------
-- Errors: validation throws {rmq = text}; the wrapper turns it into an error reply.
-- Anything else thrown is an internal fault: logged, answered with ERR internal error.
---------------------------------------------------------------------------------------

local function fail(text)
    error({ rmq = 'ERR ' .. text }, 0)
end

local function fail_arity(cmd)
    fail("wrong number of arguments for 'rmq." .. cmd .. "' command")
end

local function fail_syntax(arg)
    fail("syntax error near '" .. arg .. "'")
end

local WRONGTYPE = 'WRONGTYPE Operation against a key holding the wrong kind of value'

---------------------------------------------------------------------------------------
-- Small helpers
---------------------------------------------------------------------------------------

-- redis.call, taken at the start of every call of a function (see register): while the
-- library loads there is no redis.call, and a local is cheaper to reach than the global.
local call

-- A number as a decimal string, never in exponent form.
local function dec(n)
    return string.format('%d', n)
end

-- A one-entry memory of dec: many commands in a row share a time (the same millisecond) or a
-- deadline, and string.format costs more than comparing two numbers.
local function dec_memo()
    local last, text
    return function(n)
        if n ~= last then
            last, text = n, string.format('%d', n)
        end
        return text
    end
end
local dec_now, dec_deadline, dec_limit = dec_memo(), dec_memo(), dec_memo()

-- The clock, read once per command: unix ms (and the microseconds within the second). The
-- seconds change far less often than the microseconds: their conversion is kept.
local clock_sec, clock_sec_ms
local function clock()
    local t = call('TIME')
    local sec, us = t[1], tonumber(t[2])
    if sec ~= clock_sec then
        clock_sec, clock_sec_ms = sec, tonumber(sec) * 1000
    end
    return clock_sec_ms + (us - us % 1000) / 1000, us
end

-- Between two whole message moves. Inside the module, a command past its Lua budget stops
-- here, never in the middle of a move; Redis's own Lua has no such budget (and no function).
local function checkpoint()
    local f = redis.rmq_checkpoint
    if f then
        f()
    end
end

-- The Redis type each key of a queue holds.
local KEY_TYPES = { msg = 'list', dly = 'zset', bak = 'zset', inf = 'hash', fai = 'list', err = 'list',
    cfg = 'hash', st = 'hash', dup = 'zset', log = 'stream' }

-- A read of each key of a queue that Redis refuses with WRONGTYPE on a key of another type and
-- answers for a missing one: it checks a type for less than TYPE costs (no status table to
-- make). Lists and sorted sets give their length; hashes the field '' (never one of rmq's), as
-- HGET is among the reads the module's Lua core knows. The log keeps TYPE (off the hot paths).
local TYPE_PROBE = { msg = 'LLEN', dly = 'ZCARD', bak = 'ZCARD', inf = 'HGET', fai = 'LLEN', err = 'LLEN',
    cfg = 'HGET', st = 'HGET', dup = 'ZCARD' }

-- Refuses with WRONGTYPE, before anything is written, when one of the named keys of the queue
-- exists with another type (someone wrote it by hand). Redis's Lua cannot undo a write, so a
-- command checks the keys it is about to write after its first write.
local function need_key(k, name)
    local probe = TYPE_PROBE[name]
    if probe == 'HGET' then
        call(probe, k[name], '')
        return
    elseif probe then
        call(probe, k[name])
        return
    end
    local t = call('TYPE', k[name])
    t = type(t) == 'table' and t.ok or t
    if t ~= 'none' and t ~= KEY_TYPES[name] then
        error({ rmq = WRONGTYPE }, 0)
    end
end

local function need(k, ...)
    for _, name in ipairs({ ... }) do
        need_key(k, name)
    end
end

-- A memory that holds at most MEMORY_MAX entries and starts afresh when full, for what the
-- library keeps across calls (only what depends on the call's input alone, or is checked
-- against what the call read).
local MEMORY_MAX = 256

local function new_memory()
    return { entries = {}, size = 0 }
end

local function remember(m, key, value)
    if m.entries[key] == nil then
        if m.size >= MEMORY_MAX then
            m.entries, m.size = {}, 0
        end
        m.size = m.size + 1
    end
    m.entries[key] = value
end

-- The key names of each queue, built once per name: they depend on the name alone. Only
-- valid names get here (the wrapper checks them first), so a name found here is valid.
local key_names = new_memory()

local function keys_of(q)
    local k = key_names.entries[q]
    if k == nil then
        local tag = '{' .. q .. '}'
        k = {
            msg = 'msg:' .. tag, dly = 'dly:' .. tag, bak = 'bak:' .. tag, inf = 'inf:' .. tag,
            fai = 'fai:' .. tag, err = 'err:' .. tag, cfg = 'cfg:' .. tag, st = 'st:' .. tag,
            dup = 'dup:' .. tag, log = 'log:' .. tag,
        }
        remember(key_names, q, k)
    end
    return k
end

local function valid_queue(q)
    if key_names.entries[q] then
        return true
    end
    return type(q) == 'string' and #q >= 1 and #q <= 200 and not q:find('[^A-Za-z0-9_%.:%-#/]')
end

-- The numbers 0 to SMALL_MAX as their canonical decimal strings, both ways: most numbers in
-- arguments (COUNT 1) and many in commands (LIMIT 0 1000, a delivery count) are small, and a
-- table lookup costs less than tonumber or string.format. Filled by setup().
local SMALL_MAX = 64
local SMALL_NUMBER, SMALL_TEXT = {}, {}

-- Plain decimal digits, at most MAX_NUMBER; nil otherwise.
local function parse_number(s)
    local small = SMALL_NUMBER[s]
    if small then
        return small
    end
    if #s == 0 or #s > 16 or s:find('%D') then
        return nil
    end
    local n = tonumber(s)
    if n == nil or n > MAX_NUMBER then
        return nil
    end
    return n
end

-- Byte order, whatever the server's locale (Lua's < on strings uses strcoll).
local function bytes_less(a, b)
    local n = math.min(#a, #b)
    for i = 1, n do
        local x, y = a:byte(i), b:byte(i)
        if x ~= y then
            return x < y
        end
    end
    return #a < #b
end

---------------------------------------------------------------------------------------
-- Argument walking: keywords left to right, the first fault is reported.
---------------------------------------------------------------------------------------

local Args = {}
Args.__index = Args

local function walk(args, first)
    return setmetatable({ a = args, i = first or 1 }, Args)
end

-- The next argument as typed and upper-cased, or nil at the end.
function Args:keyword()
    local raw = self.a[self.i]
    if raw == nil then
        return nil
    end
    self.i = self.i + 1
    return raw, string.upper(raw)
end

function Args:value(kw)
    local v = self.a[self.i]
    if v == nil then
        fail(kw .. ' needs a value')
    end
    self.i = self.i + 1
    return v
end

-- A number >= min; kw names the error text.
function Args:number(kw, min)
    local n = parse_number(self:value(kw))
    if n == nil or n < min then
        fail(MSG_NUM[kw])
    end
    return n
end

function Args:count()
    local n = self:number('COUNT', 1)
    local max = max_fetch_count()
    if n > max then
        fail('COUNT must not exceed max-fetch-count (' .. dec(max) .. ')')
    end
    return n
end

-- Refuses an option given twice.
local function once(seen, raw)
    if seen ~= nil then
        fail_syntax(raw)
    end
end

-- No argument may follow.
local function no_more(args, from)
    if args[from] ~= nil then
        fail_syntax(args[from])
    end
end

---------------------------------------------------------------------------------------
-- Settings
---------------------------------------------------------------------------------------

-- Checks one pair; gives the canonical name and the value, or throws.
local function check_setting(name, value)
    local canonical = string.lower(name)
    local rule = SETTING_RULE[canonical]
    if rule == nil then
        fail("unknown setting '" .. name .. "'")
    end
    local n = parse_number(value)
    if rule == 'pos' and (n == nil or n < 1) then
        fail(canonical .. ' must be a positive integer')
    elseif rule == 'nonneg' and n == nil then
        fail(canonical .. ' must be a non-negative integer')
    elseif rule == 'bool' and (n == nil or n > 1) then
        fail(canonical .. ' must be 0 or 1')
    end
    return canonical, n
end

-- The last contents of cfg:{q} met per queue and the settings made of them (with the node
-- defaults they were made on): parsing is kept, reading is not (see settings_of).
local parsed_cfg = new_memory()

-- The effective settings of a queue; a stored value that does not parse is ignored. The
-- result is shared: never change it.
--
-- cfg:{q} is read on every call, because settings change without this library seeing it:
-- RMQ.CONFIG of the module on the same data, HSET by hand, a replica promoted (its Lua never
-- ran the writes it replicated), a FUNCTION LOAD. Only the parsing of what was read is
-- kept: the same contents (field for field) on the same node defaults give the same settings.
-- Without overrides the node defaults are the settings themselves.
local function settings_of(k, flat)
    local defaults = node_defaults()
    local n = #flat
    if n == 0 then
        return defaults
    end
    local memo = parsed_cfg.entries[k.cfg]
    if memo and memo.defaults == defaults and #memo.flat == n then
        local same = true
        for i = 1, n do
            if memo.flat[i] ~= flat[i] then
                same = false
                break
            end
        end
        if same then
            return memo.s
        end
    end
    local s = {}
    for name, v in pairs(defaults) do
        s[name] = v
    end
    for i = 1, n, 2 do
        local ok, name, v = pcall(check_setting, flat[i], flat[i + 1])
        if ok then
            s[name] = v
        end
    end
    remember(parsed_cfg, k.cfg, { defaults = defaults, flat = flat, s = s })
    return s
end

local function settings(k)
    return settings_of(k, call('HGETALL', k.cfg))
end

-- For a caller that already knows whether cfg:{q} exists (EXISTS).
local function settings_if(k, has_cfg)
    if has_cfg then
        return settings(k)
    end
    return node_defaults()
end

-- The retry delay after attempt n (n >= 1).
local function backoff(s, n)
    local base = s['backoff-ms']
    if base == 0 then
        return 0
    end
    local cap = s['backoff-max-ms']
    if n - 1 >= 60 then
        return cap
    end
    return math.min(base * 2 ^ (n - 1), cap)
end

---------------------------------------------------------------------------------------
-- Records
---------------------------------------------------------------------------------------

local function encode(rec)
    return cmsgpack.pack(rec)
end

-- The hot paths write records by hand, in exactly the bytes cmsgpack.pack gives (so a record
-- is the same whoever wrote it): strings as str (fixstr below 32 bytes, then str8, str16,
-- str32), non-negative integers in their shortest form (fixint below 128, then uint8, uint16,
-- uint32, uint64), arrays as fixarray up to 15 elements, then array16. Lua's numbers hold integers exactly up to
-- 2^53, far above any time, offset or count. FIXSTR[n] and FIXINT[n] are filled by setup().
local FIXSTR, FIXINT = {}, {}
local char -- string.char, set by setup()

local function str_header(n)
    if n < 32 then
        return FIXSTR[n]
    elseif n < 256 then
        return '\217' .. char(n)
    elseif n < 65536 then
        local lo = n % 256
        return '\218' .. char((n - lo) / 256, lo)
    end
    local b0 = n % 256
    n = (n - b0) / 256
    local b1 = n % 256
    n = (n - b1) / 256
    local b2 = n % 256
    return '\219' .. char((n - b2) / 256, b2, b1, b0)
end

local function uint_bytes(n)
    if n < 128 then
        return FIXINT[n]
    elseif n < 256 then
        return '\204' .. char(n)
    elseif n < 65536 then
        local lo = n % 256
        return '\205' .. char((n - lo) / 256, lo)
    end
    local b0 = n % 256
    n = (n - b0) / 256
    local b1 = n % 256
    n = (n - b1) / 256
    local b2 = n % 256
    n = (n - b2) / 256
    if n < 256 then
        return '\206' .. char(n, b2, b1, b0)
    end
    local b3 = n % 256
    n = (n - b3) / 256
    local b4 = n % 256
    n = (n - b4) / 256
    local b5 = n % 256
    n = (n - b5) / 256
    local b6 = n % 256
    return '\207' .. char((n - b6) / 256, b6, b5, b4, b3, b2, b1, b0)
end

-- uint_bytes of the last created time met: messages pushed in the same millisecond share it.
local last_created, last_created_bytes
local function created_bytes(created)
    if created ~= last_created then
        last_created, last_created_bytes = created, uint_bytes(created)
    end
    return last_created_bytes
end

-- Redis's cmsgpack refuses MessagePack bin strings, which storage.md allows writers to use;
-- what cmsgpack cannot read is read again by this decoder of the shapes a record may hold
-- (unsigned integers, str and bin strings, arrays). It throws on anything else.
local function slow_unpack(bytes)
    local pos = 1
    local value
    local function uint(n)
        if pos + n - 1 > #bytes then error('short record', 0) end
        local v = 0
        for i = pos, pos + n - 1 do
            v = v * 256 + bytes:byte(i)
        end
        pos = pos + n
        return v
    end
    local function str(n)
        if pos + n - 1 > #bytes then error('short record', 0) end
        local v = bytes:sub(pos, pos + n - 1)
        pos = pos + n
        return v
    end
    local function array(n)
        local t = {}
        for i = 1, n do
            t[i] = value()
        end
        return t
    end
    value = function()
        local c = uint(1)
        if c < 0x80 then return c end
        if c >= 0x90 and c <= 0x9f then return array(c - 0x90) end
        if c >= 0xa0 and c <= 0xbf then return str(c - 0xa0) end
        if c == 0xcc then return uint(1) end
        if c == 0xcd then return uint(2) end
        if c == 0xce then return uint(4) end
        if c == 0xcf then return uint(8) end
        if c == 0xd9 or c == 0xc4 then return str(uint(1)) end
        if c == 0xda or c == 0xc5 then return str(uint(2)) end
        if c == 0xdb or c == 0xc6 then return str(uint(4)) end
        if c == 0xdc then return array(uint(2)) end
        if c == 0xdd then return array(uint(4)) end
        error('unsupported MessagePack type', 0)
    end
    return value()
end

local function unpack_value(bytes)
    local ok, v = pcall(cmsgpack.unpack, bytes)
    if ok then
        return v
    end
    return slow_unpack(bytes)
end

-- The record as its array (fields past the 11th, from a later version, are kept).
local function decode(bytes)
    local rec = unpack_value(bytes)
    if type(rec) ~= 'table' or #rec < 11 or type(rec[HEADERS]) ~= 'table' or #rec[HEADERS] % 2 ~= 0 then
        error('corrupt record', 0)
    end
    for i = 1, 11 do
        if type(rec[i]) ~= RECORD_TYPES[i] then
            error('corrupt record', 0)
        end
    end
    for _, h in ipairs(rec[HEADERS]) do
        if type(h) ~= 'string' then
            error('corrupt record', 0)
        end
    end
    return rec
end

-- For the write paths: a stored value that is not a record is never dropped; it goes to
-- errors as the body of a record with error "corrupt record", and nil is returned.
local function quarantine(k, now, bytes)
    call('RPUSH', k.err, encode({ '', bytes, '', '', {}, now, 0, 0, 0, 'corrupt record', '' }))
end

local function decode_or_quarantine(k, now, bytes)
    local ok, rec = pcall(decode, bytes)
    if ok then
        return rec
    end
    quarantine(k, now, bytes)
    return nil
end

-- A server-made id: <created>-<offset>.
local dec_created = dec_memo()
local function made_id(created, offset)
    return dec_created(created) .. '-' .. dec(offset)
end

local function message_id(rec)
    if rec[ID] ~= '' then
        return rec[ID]
    end
    return made_id(rec[CREATED], rec[OFFSET])
end

-- The receipt of a delivery: <offset>-<deliveries>-<nonce>, the nonce 6 random bytes in hex,
-- so that a receipt is unique across queues and across histories (docs/storage.md). Redis
-- seeds Lua's generator the same way at every start: the clock's microseconds are mixed in,
-- so a restarted or promoted server does not repeat the nonces of another history.
-- offset_text: the offset in decimal (the caller has it for the id too).
local random, format -- math.random, string.format, set by setup()
local HEX = {} -- HEX[b]: the byte b in two hex digits, filled by setup()
local function receipt_of(offset_text, deliveries, us)
    local a = (random(0, 0xffffff) + us) % 0x1000000
    local b = random(0, 0xffffff)
    local a3, b3 = a % 256, b % 256
    a, b = (a - a3) / 256, (b - b3) / 256
    local a2, b2 = a % 256, b % 256
    return offset_text .. '-' .. (SMALL_TEXT[deliveries] or dec(deliveries)) .. '-' .. HEX[(a - a2) / 256] ..
        HEX[a2] .. HEX[a3] .. HEX[(b - b2) / 256] .. HEX[b2] .. HEX[b3]
end

-- Reading a record in place (FETCH): the canonical MessagePack forms that cmsgpack.pack writes
-- (see str_header) are read where they lie; any other form gives nil, and the record is then
-- decoded and encoded again as a whole. So the bytes FETCH stores are the same either way.
local byte, sub -- string.byte, string.sub, set by setup()

-- The str at position p of raw: its value and the position after it, or nil.
local function str_at(raw, p)
    local h = byte(raw, p)
    local len
    if h == 0xa0 then
        return '', p + 1
    elseif h == nil then
        return nil
    elseif h > 0xa0 and h <= 0xbf then
        len, p = h - 0xa0, p + 1
    elseif h == 0xd9 then
        len = byte(raw, p + 1)
        if len == nil or len < 32 then return nil end
        p = p + 2
    elseif h == 0xda then
        local a, b = byte(raw, p + 1, p + 2)
        if b == nil then return nil end
        len, p = a * 256 + b, p + 3
        if len < 256 then return nil end
    elseif h == 0xdb then
        local a, b, c, d = byte(raw, p + 1, p + 4)
        if d == nil then return nil end
        len, p = ((a * 256 + b) * 256 + c) * 256 + d, p + 5
        if len < 65536 then return nil end
    else
        return nil
    end
    if p + len - 1 > #raw then
        return nil
    end
    return sub(raw, p, p + len - 1), p + len
end

-- The non-negative integer at position p of raw: its value and the position after it, or nil
-- (also above 2^53, where a Lua number is no longer exact).
local function uint_at(raw, p)
    local h = byte(raw, p)
    if h == nil then
        return nil
    elseif h < 0x80 then
        return h, p + 1
    elseif h == 0xcc then
        local a = byte(raw, p + 1)
        if a == nil or a < 0x80 then return nil end
        return a, p + 2
    elseif h == 0xcd then
        local a, b = byte(raw, p + 1, p + 2)
        if b == nil or a == 0 then return nil end
        return a * 256 + b, p + 3
    elseif h == 0xce then
        local a, b, c, d = byte(raw, p + 1, p + 4)
        if d == nil or (a == 0 and b == 0) then return nil end
        return ((a * 256 + b) * 256 + c) * 256 + d, p + 5
    elseif h == 0xcf then
        local a, b, c, d, e, f, g, i = byte(raw, p + 1, p + 8)
        if i == nil or a ~= 0 or b >= 32 or (b == 0 and c == 0 and d == 0) then return nil end
        return ((((((b * 256 + c) * 256 + d) * 256 + e) * 256 + f) * 256 + g) * 256 + i), p + 9
    end
    return nil
end

-- The headers array at position p of raw: its strings (nil when there are none: the array is
-- empty) and the position after it; false when it is not one.
local function headers_at(raw, p)
    local h = byte(raw, p)
    if h == 0x90 then
        return nil, p + 1
    end
    local n
    if h and h > 0x90 and h <= 0x9f then
        n, p = h - 0x90, p + 1
    elseif h == 0xdc then
        local x, y = byte(raw, p + 1, p + 2)
        if y == nil then return false end
        n, p = x * 256 + y, p + 3
        if n < 16 then return false end
    else
        return false -- 0xdd: more than 65535 strings, beyond MAX_HEADERS
    end
    if n % 2 ~= 0 then
        return false
    end
    local headers = {}
    for i = 1, n do
        headers[i], p = str_at(raw, p)
        if not headers[i] then return false end
    end
    return headers, p
end

-- The fields of a record in canonical form, read where they lie: id body tag key headers (nil
-- when none) created attempt offset deliveries error, and where the offset and deliveries
-- begin (a delivery replaces the consumer); nil for any other form. Several bytes are read per call (a call costs more
-- than the bytes): first the shape most messages have, then, when it does not fit, one field
-- at a time.
local function read_in_place(raw)
    local n = #raw
    local h, x1, x2, x3, x4 = byte(raw, 1, 5)
    if h ~= 0x9b then
        return nil
    end
    local id, body, p
    -- The id: '' (made by the server) for most messages.
    if x1 == 0xa0 then
        id, p = '', 3
    else
        id, p = str_at(raw, 2)
        if not id then return nil end
        x2, x3, x4 = byte(raw, p, p + 2)
    end
    -- The body at p: header x2, then x3 x4.
    if x2 == nil then
        return nil
    elseif x2 >= 0xa0 and x2 <= 0xbf then
        local len = x2 - 0xa0
        body, p = sub(raw, p + 1, p + len), p + 1 + len
    elseif x2 == 0xd9 and x3 and x3 >= 32 then
        body, p = sub(raw, p + 2, p + 1 + x3), p + 2 + x3
    elseif x2 == 0xda and x4 and x3 > 0 then
        local len = x3 * 256 + x4
        body, p = sub(raw, p + 3, p + 2 + len), p + 3 + len
    else
        body, p = str_at(raw, p)
        if not body then return nil end
    end
    if p > n then
        return nil
    end
    -- Tag, key, headers, created: most messages have no tag, key or headers.
    local tag, key, headers, created
    local t, k, hs, c0, c1, c2, c3, c4, c5, c6, c7, c8, a, o, y1, y2, y3, y4, y5, y6, y7 = byte(raw, p, p + 20)
    if t == 0xa0 and k == 0xa0 and hs == 0x90 and c0 == 0xcf and c8 then
        if c1 ~= 0 or c2 >= 32 or (c2 == 0 and c3 == 0 and c4 == 0) then return nil end
        tag, key, p = '', '', p + 12
        created = (((((c2 * 256 + c3) * 256 + c4) * 256 + c5) * 256 + c6) * 256 + c7) * 256 + c8
    else
        tag, p = str_at(raw, p)
        if not tag then return nil end
        key, p = str_at(raw, p)
        if not key then return nil end
        headers, p = headers_at(raw, p)
        if headers == false then return nil end
        created, p = uint_at(raw, p)
        if not created then return nil end
        a, o, y1, y2, y3, y4, y5, y6, y7 = byte(raw, p, p + 8)
    end
    -- Attempt, offset, deliveries, error, consumer (a o y1…): attempts and deliveries below
    -- 128 and, in ready, neither error nor consumer, for most messages.
    if a and a < 0x80 and o then
        local offset, d, e, c, dat
        if o < 0x80 then
            offset, d, e, c, dat = o, y1, y2, y3, p + 2
        elseif o == 0xcc then
            if y1 and y1 >= 0x80 then offset, d, e, c, dat = y1, y2, y3, y4, p + 3 end
        elseif o == 0xcd then
            if y2 and y1 > 0 then offset, d, e, c, dat = y1 * 256 + y2, y3, y4, y5, p + 4 end
        elseif o == 0xce then
            if y4 and (y1 > 0 or y2 > 0) then
                offset, d, e, c, dat = ((y1 * 256 + y2) * 256 + y3) * 256 + y4, y5, y6, y7, p + 6
            end
        end
        if offset and d and d < 0x80 and e == 0xa0 and c == 0xa0 and dat + 2 == n then
            return id, body, tag, key, headers, created, a, offset, d, '', p + 1, dat
        end
    end
    local attempt, offset, deliveries, err, consumer
    attempt, p = uint_at(raw, p)
    if not attempt then return nil end
    local oat = p
    offset, p = uint_at(raw, p)
    if not offset then return nil end
    local dat = p
    deliveries, p = uint_at(raw, p)
    if not deliveries then return nil end
    err, p = str_at(raw, p)
    if not err then return nil end
    consumer, p = str_at(raw, p)
    if not consumer or p ~= n + 1 then return nil end
    return id, body, tag, key, headers, created, attempt, offset, deliveries, err, oat, dat
end

-- A record's bytes, as cmsgpack.pack writes them (see str_header); headers: nil for none.
local function headers_bytes(headers)
    local n = #headers
    local parts = { n < 16 and char(0x90 + n) or ('\220' .. char((n - n % 256) / 256, n % 256)) }
    for i = 1, n do
        local h = headers[i]
        parts[#parts + 1] = FIXSTR[#h] or str_header(#h)
        parts[#parts + 1] = h
    end
    return table.concat(parts)
end

local function record_bytes(id, body, tag, key, headers, created, attempt, offset, deliveries, err, consumer)
    return '\155' .. (FIXSTR[#id] or str_header(#id)) .. id .. (FIXSTR[#body] or str_header(#body)) .. body ..
        (FIXSTR[#tag] or str_header(#tag)) .. tag .. (FIXSTR[#key] or str_header(#key)) .. key ..
        (headers and headers_bytes(headers) or '\144') .. created_bytes(created) .. (FIXINT[attempt] or uint_bytes(attempt)) ..
        (FIXINT[offset] or uint_bytes(offset)) .. (FIXINT[deliveries] or uint_bytes(deliveries)) ..
        (FIXSTR[#err] or str_header(#err)) .. err .. (FIXSTR[#consumer] or str_header(#consumer)) .. consumer
end

-- The producer's id of an encoded record, read without decoding it: '' when the server made
-- the id, nil when the bytes are not what a record starts with (or the id is too long to
-- read this way): decode then.
local function raw_id(raw)
    local b = raw:byte(1)
    local pos
    if b and b >= 0x9b and b <= 0x9f then
        pos = 2
    elseif b == 0xdc then
        pos = 4
    else
        return nil
    end
    local h = raw:byte(pos)
    if h and h >= 0xa0 and h <= 0xbf then
        return raw:sub(pos + 1, pos + h - 0xa0)
    elseif h == 0xd9 or h == 0xc4 then
        local n = raw:byte(pos + 1)
        return n and raw:sub(pos + 2, pos + 1 + n)
    end
    return nil
end

local function headers_map(flat)
    local m = {}
    for i = 1, #flat, 2 do
        m[flat[i]] = flat[i + 1]
    end
    return { map = m }
end

-- The fields every message reply has.
local function message_fields(rec)
    return {
        id = message_id(rec), body = rec[BODY], attempt = rec[ATTEMPT], tag = rec[TAG],
        key = rec[KEY], headers = headers_map(rec[HEADERS]), created = rec[CREATED],
        offset = rec[OFFSET],
    }
end

---------------------------------------------------------------------------------------
-- Counters, log, and the moves between states
---------------------------------------------------------------------------------------

-- Adds to a counter. A counter someone overwrote with something not a number starts again
-- from `by`: counters are statistics, and the move they count is already made.
local function bump(k, name, by)
    local text = by and dec(by) or '1'
    local r = redis.pcall('HINCRBY', k.st, name, text)
    if type(r) == 'table' and r.err then
        call('HSET', k.st, name, text)
    end
end

-- The next offset of the queue. A counter that is not a number (set by hand) is Redis's
-- error, given as it is: no offset is given twice.
local function next_offset(k)
    return call('HINCRBY', k.st, 'offset', '1')
end

-- Appends an event to the message log when the queue's log is on: offset event id time, then
-- `extra`, the event's own fields as a flat list of names and values (docs/commands.md, LOG).
local function log_entry(k, s, now, event, offset, id, extra)
    if s['log'] ~= 1 then
        return
    end
    local fields = { 'XADD', k.log, 'MAXLEN', dec(s['log-maxlen']), '*',
        'offset', dec(offset), 'event', event, 'id', id, 'time', dec(now) }
    for _, v in ipairs(extra or {}) do
        fields[#fields + 1] = v
    end
    call(unpack(fields))
end

local function log_event(k, s, now, event, rec, extra)
    log_entry(k, s, now, event, rec[OFFSET], message_id(rec), extra)
end

-- A push event: the message itself, and `due` when it is delayed.
local function log_push(k, s, now, rec, due)
    if s['log'] ~= 1 then
        return
    end
    local extra = { 'body', rec[BODY], 'tag', rec[TAG], 'key', rec[KEY],
        'headers', cmsgpack.pack(rec[HEADERS]) }
    if due ~= nil then
        extra[#extra + 1] = 'due'
        extra[#extra + 1] = dec(due)
    end
    log_event(k, s, now, 'push', rec, extra)
end

-- An event after a delivery (retry, fail, error, reclaim): attempt, and error when there is a
-- reason.
local function log_outcome(k, s, now, event, rec, reason)
    if s['log'] ~= 1 then
        return
    end
    local extra = { 'attempt', dec(rec[ATTEMPT]) }
    if reason ~= nil then
        extra[#extra + 1] = 'error'
        extra[#extra + 1] = reason
    end
    log_event(k, s, now, event, rec, extra)
end

-- The keys a move between states may write (and the log when it is on).
local function need_moving(k, s)
    need(k, 'msg', 'dly', 'bak', 'inf', 'fai', 'err', 'st')
    if s['log'] == 1 then
        need(k, 'log')
    end
end

-- In an ordered queue the held message (a retry waiting out its backoff) holds the line.
local function hold_of(k)
    return tonumber(call('HGET', k.st, 'hold') or '')
end

-- Call after taking rec out of dly:{q}: clears hold if rec was the held message.
local function release_hold(k, rec)
    local hold = hold_of(k)
    if hold ~= nil and hold == rec[OFFSET] then
        call('HDEL', k.st, 'hold')
    end
end

-- Appends (or, front = true, prepends) a record to ready.
local function to_ready(k, rec, front)
    call(front and 'LPUSH' or 'RPUSH', k.msg, encode(rec))
end

-- A delivered message going back to ready: the back of the line, or the front in an
-- ordered queue, so that order holds.
local function ready_again(k, s, rec)
    to_ready(k, rec, s['ordered'] == 1)
end

local function to_failed(k, rec, reason)
    rec[ERROR] = reason
    rec[CONSUMER] = ''
    call('RPUSH', k.fai, encode(rec))
end

-- Takes an in-flight delivery out of bak/inf; gives its record, or nil when stale.
local function take_inflight(k, now, receipt)
    if call('ZREM', k.bak, receipt) == 0 then
        return nil
    end
    local bytes = call('HGET', k.inf, receipt)
    call('HDEL', k.inf, receipt)
    if not bytes then
        return nil
    end
    local rec = decode_or_quarantine(k, now, bytes)
    if rec then
        rec[CONSUMER] = ''
    end
    return rec
end

-- Due delayed messages to ready (at most `limit`), in due order. A retry (attempt > 0) is
-- a delivered message coming back (the front in an ordered queue); a DELAY push is new.
local function promote(k, s, now, limit)
    -- Most calls find nothing due: a count (an integer reply) says so for less than a range.
    if call('ZCOUNT', k.dly, '-inf', dec_now(now)) == 0 then
        return 0
    end
    local due = call('ZRANGEBYSCORE', k.dly, '-inf', dec_now(now), 'LIMIT', '0', dec_limit(limit))
    if #due == 0 then
        return 0
    end
    need_moving(k, s)
    local hold = hold_of(k)
    for _, bytes in ipairs(due) do
        checkpoint()
        call('ZREM', k.dly, bytes)
        local rec = decode_or_quarantine(k, now, bytes)
        if rec then
            if hold ~= nil and rec[OFFSET] == hold then
                call('HDEL', k.st, 'hold')
            end
            if rec[ATTEMPT] > 0 then
                ready_again(k, s, rec)
            else
                call('RPUSH', k.msg, bytes)
            end
        end
    end
    return #due
end

-- Expired in-flight messages back to ready (the front in an ordered queue), or to failed
-- when their attempts are used up: at most `limit`, or all of them (nil), a page at a time.
-- Returns how many were taken.
local function reclaim(k, s, now, limit)
    -- As in promote: most calls find nothing expired.
    if call('ZCOUNT', k.bak, '-inf', dec_now(now)) == 0 then
        return 0
    end
    local taken = 0
    while true do
        local page = math.min(limit or BATCH, BATCH)
        local expired = call('ZRANGEBYSCORE', k.bak, '-inf', dec_now(now), 'LIMIT', '0', dec_limit(page))
        if #expired > 0 and taken == 0 then
            need_moving(k, s)
        end
        for _, receipt in ipairs(expired) do
            checkpoint()
            local rec = take_inflight(k, now, receipt)
            if rec then
                if rec[ATTEMPT] >= s['max-attempts'] then
                    to_failed(k, rec, 'max attempts (lock expired)')
                    bump(k, 'dead')
                    log_outcome(k, s, now, 'fail', rec, rec[ERROR])
                else
                    ready_again(k, s, rec)
                    log_outcome(k, s, now, 'reclaim', rec)
                end
            end
        end
        taken = taken + #expired
        if #expired < page or (limit ~= nil and taken >= limit) then
            return taken
        end
    end
end

---------------------------------------------------------------------------------------
-- Message replies for PEEK and GET: a map with state-specific fields.
---------------------------------------------------------------------------------------

local function state_reply(rec, state, extra)
    local m = message_fields(rec)
    m.state = state
    if state == 'delayed' then
        m.due = extra
        m.error = rec[ERROR]
    elseif state == 'inflight' then
        m.deadline = extra
        m.consumer = rec[CONSUMER]
    elseif state == 'failed' or state == 'errors' then
        m.error = rec[ERROR]
    end
    return { map = m }
end

-- Records are read in pages of this many, so no state is ever copied whole into Lua.
local PAGE = 256

-- Calls fn(rec, state, extra, raw, receipt) for every message of a state, in its order, for
-- which wanted(raw, rec) is true (wanted may skip decoding: rec is nil on its first call, and
-- it is called again with the record when it answers nil). extra: due (delayed) or deadline
-- (inflight). fn returning true stops the walk. Records that do not decode are passed over.
local function each_in_state(k, state, wanted, fn)
    local function visit(raw, extra, receipt)
        local want = wanted(raw, nil)
        if want == false then
            return false
        end
        local ok, rec = pcall(decode, raw)
        if not ok or (want == nil and not wanted(raw, rec)) then
            return false
        end
        return fn(rec, state, extra, raw, receipt)
    end
    if state == 'ready' or state == 'failed' or state == 'errors' then
        local key = (state == 'ready' and k.msg) or (state == 'failed' and k.fai) or k.err
        local start = 0
        while true do
            local page = call('LRANGE', key, start, start + PAGE - 1)
            for _, raw in ipairs(page) do
                if visit(raw) then return true end
            end
            if #page < PAGE then return false end
            start = start + PAGE
        end
    end
    local zset = state == 'delayed' and k.dly or k.bak
    local start = 0
    while true do
        local flat = call('ZRANGE', zset, start, start + PAGE - 1, 'WITHSCORES')
        for i = 1, #flat, 2 do
            local score = tonumber(flat[i + 1])
            if state == 'delayed' then
                if visit(flat[i], score) then return true end
            else
                local raw = call('HGET', k.inf, flat[i])
                if raw and visit(raw, score, flat[i]) then return true end
            end
        end
        if #flat < 2 * PAGE then return false end
        start = start + PAGE
    end
end

-- A `wanted` for each_in_state: the messages whose id is in the set `ids`.
local function with_ids(ids)
    return function(raw, rec)
        if rec then
            return ids[message_id(rec)] == true
        end
        local id = raw_id(raw)
        if id == nil or id == '' then
            return nil -- decode to know
        end
        return ids[id] == true
    end
end

local function everything()
    return true
end

local ALL_STATES = { 'ready', 'delayed', 'inflight', 'failed', 'errors' }

---------------------------------------------------------------------------------------
-- Commands. Each takes (q, args); validation first, writes after.
---------------------------------------------------------------------------------------

local commands = {}

-- RMQ.PUSH q body [ID id] [TAG tag] [KEY key] [HEADER name value]… [DELAY ms | AT unix-ms]
-- Keys: msg dly st dup cfg log. Reply: the id (bulk string).
-- PUSH's options, or nil for each one not given (headers: nil when none).
local function push_options(args)
    local o = walk(args, 2)
    local id, tag, key, delay, at, headers
    local seen = {}
    while true do
        local raw, kw = o:keyword()
        if raw == nil then break end
        if kw == 'ID' then
            once(id, raw)
            id = o:value('ID')
            if #id < 1 or #id > 128 or id:find('[^\33-\126]') then
                fail('ID must be 1 to 128 printable ASCII characters without spaces')
            end
        elseif kw == 'TAG' then
            once(tag, raw)
            tag = o:value('TAG')
        elseif kw == 'KEY' then
            once(key, raw)
            key = o:value('KEY')
        elseif kw == 'HEADER' then
            local name = o:value('HEADER')
            local value = o:value('HEADER')
            if name == '' then
                fail('HEADER name must not be empty')
            end
            if seen[name] then
                fail("HEADER '" .. name .. "' given twice")
            end
            headers = headers or {}
            if #headers >= 2 * MAX_HEADERS then
                fail('a message has at most ' .. dec(MAX_HEADERS) .. ' HEADERs')
            end
            seen[name] = true
            headers[#headers + 1] = name
            headers[#headers + 1] = value
        elseif kw == 'DELAY' then
            once(delay, raw)
            delay = o:number('DELAY', 0)
            if at ~= nil then fail('DELAY and AT cannot be used together') end
        elseif kw == 'AT' then
            once(at, raw)
            at = o:number('AT', 0)
            if delay ~= nil then fail('DELAY and AT cannot be used together') end
        else
            fail_syntax(raw)
        end
    end
    return id, tag, key, delay, at, headers
end

function commands.push(q, args)
    local body = args[1]
    if body == nil then
        fail_arity('push')
    end
    local id, tag, key, delay, at, headers
    if args[2] ~= nil then
        id, tag, key, delay, at, headers = push_options(args)
    end

    local k = keys_of(q)
    local s, now, later
    if delay == nil and at == nil then
        -- One call says whether the queue has settings (1) and a ready list (2), whose type
        -- is then checked: a missing key has none to check.
        local present = call('EXISTS', k.cfg, k.msg, k.msg)
        s = settings_if(k, present % 2 == 1)
        now = clock()
        if present >= 2 then
            call(TYPE_PROBE.msg, k.msg) -- need_key(k, 'msg')
        end
    else
        s = settings(k)
        now = clock()
        later = (delay ~= nil and delay > 0) or (at ~= nil and at > now)
        need_key(k, later and 'dly' or 'msg')
    end
    local window = s['dedup-window-ms']
    local dedup = id ~= nil and window > 0
    if dedup then
        need_key(k, 'st') -- written after the dedup window's trim
    end
    local log = s['log'] == 1
    if log then
        need_key(k, 'log')
    end

    if dedup then
        local old = call('ZRANGEBYSCORE', k.dup, '-inf', dec(now - window), 'LIMIT', '0', dec_limit(DEDUP_TRIM))
        for _, member in ipairs(old) do
            call('ZREM', k.dup, member)
        end
        local seen_at = tonumber(call('ZSCORE', k.dup, id) or '')
        if seen_at ~= nil and seen_at > now - window then
            bump(k, 'dups')
            return id
        end
    end
    if s['maxlen'] > 0 then
        local held = call('LLEN', k.msg) + call('ZCARD', k.dly) + call('ZCARD', k.bak)
        if held >= s['maxlen'] then
            fail('queue full')
        end
    end

    local offset = next_offset(k)
    local bytes
    if id or tag or key or headers then
        bytes = record_bytes(id or '', body, tag or '', key or '', headers, now, 0, offset, 0, '', '')
    else
        -- The usual message, a body alone: record_bytes with the empty fields written out.
        bytes = '\155\160' .. (FIXSTR[#body] or str_header(#body)) .. body .. '\160\160\144' .. created_bytes(now) ..
            '\0' .. (FIXINT[offset] or uint_bytes(offset)) .. '\0\160\160'
    end
    local due = (delay ~= nil and now + delay) or at
    if due ~= nil and due > now then
        call('ZADD', k.dly, dec(due), bytes)
    else
        due = nil
        call('RPUSH', k.msg, bytes)
    end
    if dedup then
        call('ZADD', k.dup, dec_now(now), id)
    end
    if log then
        log_push(k, s, now, { id or '', body, tag or '', key or '', headers or {}, now, 0, offset, 0, '', '' }, due)
    end
    return id or made_id(now, offset)
end

-- RMQ.FETCH q [COUNT n] [LOCK ms] [BLOCK ms] [CONSUMER name] [COMPACT]
-- Keys: dly msg bak inf fai st cfg log. Reply: array of message maps
-- (id body receipt attempt tag key headers created offset deadline), or null; with COMPACT
-- each message is an array of those values in that order, its headers a flat array.
-- FETCH's options: COUNT (default 1), LOCK (nil: the queue's lock-ms), CONSUMER (default ''),
-- COMPACT (false).
local function fetch_options(args)
    local o = walk(args)
    local count, lock, block, consumer, compact
    while true do
        local raw, kw = o:keyword()
        if raw == nil then break end
        if kw == 'COUNT' then
            once(count, raw)
            count = o:count()
        elseif kw == 'LOCK' then
            once(lock, raw)
            lock = o:number('LOCK', 1)
        elseif kw == 'BLOCK' then
            once(block, raw)
            block = o:number('BLOCK', 0) -- checked; a function never waits
        elseif kw == 'CONSUMER' then
            once(consumer, raw)
            consumer = o:value('CONSUMER')
            if #consumer < 1 or #consumer > 200 then
                fail('CONSUMER must be 1 to 200 bytes')
            end
        elseif kw == 'COMPACT' then
            once(compact, raw)
            compact = true
        else
            fail_syntax(raw)
        end
    end
    return count or 1, lock, consumer or '', compact or false
end

-- The headers of a message that has none (FETCH's replies share it), as a map and as the flat
-- array of a COMPACT reply.
local NO_HEADERS = { map = {} }
local NO_FLAT_HEADERS = {}

-- The next delivery of the record raw, with nothing written yet: the record to store (attempt
-- and deliveries one more, the consumer set; every other byte as it was) and the reply's map
-- (the table m when given, filled; its headers a flat array when compact). nil when raw is not
-- a record.
local function next_delivery(raw, consumer, deadline, us, m, compact)
    local id, body, tag, key, headers, created, attempt, offset, deliveries, err, oat, dat = read_in_place(raw)
    local bytes
    if id then
        -- Written again from the values (the same bytes, canonical as they were), the offset
        -- copied: no long string is made on the way (Lua interns every string, and a long
        -- one costs a search among the records of the same length).
        attempt, deliveries = attempt + 1, deliveries + 1
        bytes = '\155' .. (FIXSTR[#id] or str_header(#id)) .. id .. (FIXSTR[#body] or str_header(#body)) .. body ..
            (FIXSTR[#tag] or str_header(#tag)) .. tag .. (FIXSTR[#key] or str_header(#key)) .. key ..
            (headers and headers_bytes(headers) or '\144') .. created_bytes(created) ..
            (FIXINT[attempt] or uint_bytes(attempt)) .. (FIXINT[offset] or sub(raw, oat, dat - 1)) ..
            (FIXINT[deliveries] or uint_bytes(deliveries)) .. (FIXSTR[#err] or str_header(#err)) .. err ..
            (FIXSTR[#consumer] or str_header(#consumer)) .. consumer
    else
        local ok, rec = pcall(decode, raw)
        if not ok then
            return nil
        end
        rec[ATTEMPT] = rec[ATTEMPT] + 1
        rec[DELIVERIES] = rec[DELIVERIES] + 1
        rec[CONSUMER] = consumer
        bytes = encode(rec)
        id, body, tag, key, headers = rec[ID], rec[BODY], rec[TAG], rec[KEY], rec[HEADERS]
        created, attempt, offset, deliveries = rec[CREATED], rec[ATTEMPT], rec[OFFSET], rec[DELIVERIES]
        if #headers == 0 then
            headers = nil
        end
    end
    local offset_text = dec(offset)
    if id == '' then
        id = dec_created(created) .. '-' .. offset_text
    end
    local receipt = receipt_of(offset_text, deliveries, us)
    local hmap
    if compact then
        hmap = headers or NO_FLAT_HEADERS
    else
        hmap = headers and headers_map(headers) or NO_HEADERS
    end
    if m then
        m.id, m.body, m.attempt, m.tag, m.key, m.headers = id, body, attempt, tag, key, hmap
        m.created, m.offset, m.receipt, m.deadline = created, offset, receipt, deadline
        return bytes, m
    end
    return bytes, {
        id = id, body = body, attempt = attempt, tag = tag, key = key, headers = hmap, created = created,
        offset = offset, receipt = receipt, deadline = deadline,
    }
end

-- The reply of a FETCH of one message, kept from call to call: Redis writes a function's reply
-- out before it runs the next command, so the tables can be filled again then (less garbage
-- on the hot path).
local ONE_MAP = {}
local ONE_REPLY = { { map = ONE_MAP } }
local ONE_ARRAY = {}
local ONE_COMPACT_REPLY = { ONE_ARRAY }

-- A message's COMPACT reply: its values in the map's order, in the table a when given.
local function compact_of(m, a)
    a = a or {}
    a[1], a[2], a[3], a[4], a[5] = m.id, m.body, m.receipt, m.attempt, m.tag
    a[6], a[7], a[8], a[9], a[10] = m.key, m.headers, m.created, m.offset, m.deadline
    return a
end

-- A delivery whose record is in inf:{q} already: its lock deadline (and its log entry).
local function lock_out(k, s, now, m, consumer, deadline_text)
    call('ZADD', k.bak, deadline_text, m.receipt)
    if s['log'] == 1 then
        log_entry(k, s, now, 'fetch', m.offset, m.id,
            { 'consumer', consumer, 'attempt', dec(m.attempt), 'deadline', deadline_text })
    end
end

-- Writes one delivery: in flight under its receipt until the deadline (and logged).
local function hand_out(k, s, now, bytes, m, consumer, deadline_text)
    call('HSET', k.inf, m.receipt, bytes)
    lock_out(k, s, now, m, consumer, deadline_text)
end

function commands.fetch(q, args)
    local count, lock, consumer, compact = 1, nil, '', false
    local first = args[1]
    if first ~= nil then
        -- The usual options, COUNT n and COMPACT alone or together (in that order, as the rmq
        -- clients send them), are read without walking them.
        local rest = args[3]
        local usual = rest == nil or ((rest == 'COMPACT' or rest == 'compact') and args[4] == nil)
        local n = usual and (first == 'COUNT' or first == 'count') and SMALL_NUMBER[args[2]]
        if n and n >= 1 and n <= max_fetch_count() then
            count, compact = n, rest ~= nil
        elseif (first == 'COMPACT' or first == 'compact') and args[2] == nil then
            compact = true
        else
            count, lock, consumer, compact = fetch_options(args)
        end
    end

    local k = keys_of(q)
    -- One call says whether the queue has settings (1) and delayed messages (2): EXISTS
    -- counts a key once for each time it is named.
    local present = call('EXISTS', k.cfg, k.dly, k.dly)
    local s = settings_if(k, present % 2 == 1)
    if s['paused'] == 1 then
        return false
    end
    local now, us = clock()
    if present >= 2 then
        promote(k, s, now, BATCH)
    end
    reclaim(k, s, now, BATCH)

    if s['ordered'] == 1 then
        if call('ZCARD', k.bak) > 0 or hold_of(k) ~= nil then
            return false
        end
        count = 1
    end
    if s['log'] == 1 then
        need_key(k, 'log')
    end
    local deadline = now + (lock or s['lock-ms'])
    local deadline_text = dec_deadline(deadline)
    local quarantined = 0
    -- One message (the usual FETCH): it is taken off ready first, one call fewer than reading
    -- it and popping it after. msg:{q} and bak:{q} were read already (a key of another type
    -- stops the command before its first write); inf:{q} was not, and Redis's Lua cannot undo
    -- a write, so when Redis refuses the HSET the record goes back to the front of ready
    -- before the error is raised: nothing is lost. A record that does not decode goes back
    -- too, and then to errors (it does not count against COUNT), err:{q} checked first.
    if count == 1 then
        while quarantined <= QUARANTINE_LIMIT do
            local raw = call('LPOP', k.msg)
            if not raw then
                return false
            end
            local bytes, m = next_delivery(raw, consumer, deadline, us, ONE_MAP, compact)
            if bytes then
                local refused = redis.pcall('HSET', k.inf, m.receipt, bytes)
                if type(refused) == 'table' and refused.err then
                    call('LPUSH', k.msg, raw)
                    error(refused, 0)
                end
                lock_out(k, s, now, m, consumer, deadline_text)
                if compact then
                    compact_of(m, ONE_ARRAY)
                    return ONE_COMPACT_REPLY
                end
                return ONE_REPLY
            end
            call('LPUSH', k.msg, raw)
            need_key(k, 'err')
            quarantine(k, now, raw)
            quarantined = quarantined + 1
            call('LPOP', k.msg)
        end
        return false
    end
    -- Several: the records are read before anything is written. The first write is HSET
    -- inf:{q}, which Redis refuses on a key of another type. A record that does not decode
    -- goes to errors: err:{q} and inf:{q} are checked first then. Taking the records off
    -- ready comes last.
    local out = {}
    while #out < count and quarantined <= QUARANTINE_LIMIT do
        local want = count - #out
        local raws = call('LRANGE', k.msg, '0', SMALL_TEXT[want - 1] or dec(want - 1))
        local n = #raws
        if n == 0 then
            break
        end
        local records, maps, bad = {}, {}, false
        for i = 1, n do
            records[i], maps[i] = next_delivery(raws[i], consumer, deadline, us, nil, compact)
            bad = bad or not records[i]
        end
        if bad then
            need(k, 'err', 'inf')
        end
        for i = 1, n do
            if records[i] then
                hand_out(k, s, now, records[i], maps[i], consumer, deadline_text)
                out[#out + 1] = compact and compact_of(maps[i]) or { map = maps[i] }
            else
                quarantine(k, now, raws[i])
                quarantined = quarantined + 1
            end
        end
        call('LPOP', k.msg, SMALL_TEXT[n] or dec(n))
    end
    if #out == 0 then
        return false
    end
    return out
end

-- RMQ.ACK q receipt [receipt …]
-- Keys: bak inf st cfg log. Reply: how many were acked (stale receipts count 0).
function commands.ack(q, args)
    if args[1] == nil then
        fail_arity('ack')
    end
    local k = keys_of(q)
    local s = settings_if(k, call('EXISTS', k.cfg) == 1)
    local n = 0
    if s['log'] ~= 1 then
        -- The hot path: the record is never read, and no time is needed.
        need_key(k, 'inf')
        for i = 1, #args do
            local receipt = args[i]
            if call('ZREM', k.bak, receipt) == 1 then
                call('HDEL', k.inf, receipt)
                n = n + 1
            end
        end
        return n
    end
    local now = clock()
    need(k, 'inf', 'err', 'log')
    for _, receipt in ipairs(args) do
        local rec = take_inflight(k, now, receipt)
        if rec then
            n = n + 1
            log_event(k, s, now, 'ack', rec)
        end
    end
    return n
end

-- RMQ.NACK q receipt [RETRY [DELAY ms] | FAIL | ERROR] [REASON text]
-- Keys: bak inf msg dly fai err st cfg log. Reply: 1, or 0 for a stale receipt.
function commands.nack(q, args)
    local receipt = args[1]
    if receipt == nil then
        fail_arity('nack')
    end
    local o = walk(args, 2)
    local action, delay, reason
    while true do
        local raw, kw = o:keyword()
        if raw == nil then break end
        if kw == 'RETRY' or kw == 'FAIL' or kw == 'ERROR' then
            if action ~= nil then
                fail('RETRY, FAIL and ERROR cannot be used together')
            end
            if delay ~= nil and kw ~= 'RETRY' then
                fail('DELAY goes only with RETRY')
            end
            action = kw
        elseif kw == 'DELAY' then
            once(delay, raw)
            delay = o:number('DELAY', 0)
            if action == 'FAIL' or action == 'ERROR' then
                fail('DELAY goes only with RETRY')
            end
        elseif kw == 'REASON' then
            once(reason, raw)
            reason = o:value('REASON')
        else
            fail_syntax(raw)
        end
    end
    action = action or 'RETRY'

    local k = keys_of(q)
    local s = settings(k)
    local now = clock()
    need_moving(k, s)
    local rec = take_inflight(k, now, receipt)
    if rec == nil then
        return 0
    end
    if action == 'FAIL' then
        to_failed(k, rec, reason or 'failed')
        bump(k, 'dead')
        log_outcome(k, s, now, 'fail', rec, rec[ERROR])
    elseif action == 'ERROR' then
        rec[ERROR] = reason or 'error'
        call('RPUSH', k.err, encode(rec))
        bump(k, 'errored')
        log_outcome(k, s, now, 'error', rec, rec[ERROR])
    elseif rec[ATTEMPT] >= s['max-attempts'] then
        to_failed(k, rec, 'max attempts')
        bump(k, 'dead')
        log_outcome(k, s, now, 'fail', rec, rec[ERROR])
    else
        if reason ~= nil then
            rec[ERROR] = reason
        end
        local wait = delay or backoff(s, rec[ATTEMPT])
        if wait > 0 then
            call('ZADD', k.dly, dec(now + wait), encode(rec))
            if s['ordered'] == 1 then
                call('HSET', k.st, 'hold', dec(rec[OFFSET]))
            end
            bump(k, 'retried')
            local extra = { 'attempt', dec(rec[ATTEMPT]), 'due', dec(now + wait) }
            if reason ~= nil then
                extra[#extra + 1] = 'error'
                extra[#extra + 1] = reason
            end
            log_event(k, s, now, 'delay', rec, extra)
        else
            ready_again(k, s, rec)
            bump(k, 'retried')
            log_outcome(k, s, now, 'retry', rec, reason)
        end
    end
    return 1
end

-- RMQ.TOUCH q receipt [LOCK ms]
-- Keys: bak cfg. Reply: the new deadline (unix ms), or 0 for a stale receipt.
function commands.touch(q, args)
    local receipt = args[1]
    if receipt == nil then
        fail_arity('touch')
    end
    local o = walk(args, 2)
    local lock
    while true do
        local raw, kw = o:keyword()
        if raw == nil then break end
        if kw == 'LOCK' then
            once(lock, raw)
            lock = o:number('LOCK', 1)
        else
            fail_syntax(raw)
        end
    end
    local k = keys_of(q)
    local s = settings(k)
    local now = clock()
    if not call('ZSCORE', k.bak, receipt) then
        return 0
    end
    local deadline = now + (lock or s['lock-ms'])
    call('ZADD', k.bak, 'XX', dec(deadline), receipt)
    return deadline
end

-- Moves every record of a failed/errors list back to ready, attempt 0, error cleared.
-- A value that is not a record goes to (the back of) errors as it is; in errors itself
-- that ends the pass, so it is not met again.
local function recover_list(k, s, now, key)
    local n = 0
    while true do
        checkpoint()
        local raw = call('LPOP', key)
        if not raw then
            return n
        end
        n = n + 1
        local ok, rec = pcall(decode, raw)
        if not ok then
            call('RPUSH', k.err, raw)
            if key == k.err then
                return n
            end
        else
            rec[ATTEMPT] = 0
            rec[ERROR] = ''
            to_ready(k, rec, false)
            log_event(k, s, now, 'recover', rec)
        end
    end
end

-- RMQ.RECOVER q [EXPIRED] [FAILED] [ERRORS]
-- Keys: bak inf msg fai err st cfg log. Reply: [expired, failed, errors] counts.
function commands.recover(q, args)
    local want = {}
    for _, raw in ipairs(args) do
        local kw = string.upper(raw)
        if kw ~= 'EXPIRED' and kw ~= 'FAILED' and kw ~= 'ERRORS' then
            fail_syntax(raw)
        end
        once(want[kw], raw)
        want[kw] = true
    end
    if args[1] == nil then
        want = { EXPIRED = true, FAILED = true, ERRORS = true }
    end
    local k = keys_of(q)
    local s = settings(k)
    local now = clock()
    need_moving(k, s)
    local counts = { 0, 0, 0 }
    if want.EXPIRED then counts[1] = reclaim(k, s, now, nil) end
    if want.FAILED then counts[2] = recover_list(k, s, now, k.fai) end
    if want.ERRORS then counts[3] = recover_list(k, s, now, k.err) end
    return counts
end

-- RMQ.STATS q
-- Keys: msg dly bak fai err st cfg. Reply: map of integers (ready delayed inflight failed
-- errors pushed acked retried dead errored dups offset oldest_ready_ms removed paused).
function commands.stats(q, args)
    no_more(args, 1)
    local k = keys_of(q)
    local now = clock()
    local paused = tonumber(call('HGET', k.cfg, 'paused') or '')
    if paused == nil or paused > 1 then
        paused = node_defaults()['paused'] or 0
    end
    local names = { 'retried', 'dead', 'errored', 'dups', 'offset', 'removed' }
    local vals = call('HMGET', k.st, unpack(names))
    local m = {
        ready = call('LLEN', k.msg), delayed = call('ZCARD', k.dly),
        inflight = call('ZCARD', k.bak), failed = call('LLEN', k.fai),
        errors = call('LLEN', k.err), oldest_ready_ms = 0,
    }
    for i, name in ipairs(names) do
        m[name] = tonumber(vals[i] or '0') or 0
    end
    -- Every push takes an offset; a message leaves only by ACK or by DEL/PURGE (counted in
    -- removed): so pushed and acked need no write on the hot path.
    m.pushed = m.offset
    local held = m.ready + m.delayed + m.inflight + m.failed + m.errors
    m.acked = math.max(0, m.offset - held - m.removed)
    m.paused = paused
    local first = call('LINDEX', k.msg, 0)
    if first then
        local ok, rec = pcall(decode, first)
        if ok then
            m.oldest_ready_ms = math.max(0, now - rec[CREATED])
        end
    end
    return { map = m }
end

-- RMQ.PEEK q [READY|DELAYED|INFLIGHT|FAILED|ERRORS] [START n] [COUNT n]
-- Keys: one state's keys. Reply: array of message maps with state fields.
function commands.peek(q, args)
    local o = walk(args)
    local state, start, count
    while true do
        local raw, kw = o:keyword()
        if raw == nil then break end
        if STATE_KEYWORDS[kw] then
            once(state, raw)
            state = STATE_KEYWORDS[kw]
        elseif kw == 'START' then
            once(start, raw)
            start = o:number('START', 0)
        elseif kw == 'COUNT' then
            once(count, raw)
            count = o:count()
        else
            fail_syntax(raw)
        end
    end
    state = state or 'ready'
    start = start or 0
    count = count or 10
    local k = keys_of(q)
    local first, last = dec(start), dec(start + count - 1)
    local out = {}
    -- A record that does not decode is passed over (FETCH, the guard and RECOVER move such
    -- records to errors; PEEK changes nothing).
    local function add(raw, extra)
        local ok, rec = pcall(decode, raw)
        if ok then
            out[#out + 1] = state_reply(rec, state, extra)
        end
    end
    if state == 'ready' or state == 'failed' or state == 'errors' then
        local key = (state == 'ready' and k.msg) or (state == 'failed' and k.fai) or k.err
        for _, raw in ipairs(call('LRANGE', key, first, last)) do
            add(raw)
        end
    elseif state == 'delayed' then
        local flat = call('ZRANGE', k.dly, first, last, 'WITHSCORES')
        for i = 1, #flat, 2 do
            add(flat[i], tonumber(flat[i + 1]))
        end
    else
        local flat = call('ZRANGE', k.bak, first, last, 'WITHSCORES')
        for i = 1, #flat, 2 do
            local raw = call('HGET', k.inf, flat[i])
            if raw then
                add(raw, tonumber(flat[i + 1]))
            end
        end
    end
    return out
end

-- RMQ.GET q id
-- Keys: msg dly bak inf fai err. Reply: the first message with that id (ready, delayed,
-- inflight, failed, errors) as a map with its state, or null. O(n), a page at a time.
function commands.get(q, args)
    local id = args[1]
    if id == nil then
        fail_arity('get')
    end
    no_more(args, 2)
    local k = keys_of(q)
    local found = false
    for _, state in ipairs(ALL_STATES) do
        local hit = each_in_state(k, state, with_ids({ [id] = true }), function(rec, st, extra)
            found = state_reply(rec, st, extra)
            return true
        end)
        if hit then break end
    end
    return found
end

-- Collects the ids of args as a set.
local function id_set(args, cmd)
    if args[1] == nil then
        fail_arity(cmd)
    end
    local set = {}
    for _, id in ipairs(args) do
        set[id] = true
    end
    return set
end

-- The messages of a state with one of the ids: { {rec, raw, receipt}, … } in the state's order.
local function hits_of(k, state, ids)
    local hits = {}
    each_in_state(k, state, with_ids(ids), function(rec, _, _, raw, receipt)
        hits[#hits + 1] = { rec, raw, receipt }
    end)
    return hits
end

-- RMQ.DEL q id [id …]
-- Keys: msg dly bak inf fai err st cfg log. Reply: how many messages were deleted.
function commands.del(q, args)
    local ids = id_set(args, 'del')
    local k = keys_of(q)
    local s = settings(k)
    local now = clock()
    need_moving(k, s)
    local n = 0
    for _, state in ipairs(ALL_STATES) do
        for _, h in ipairs(hits_of(k, state, ids)) do
            checkpoint()
            local rec, raw, receipt = h[1], h[2], h[3]
            if state == 'ready' then
                call('LREM', k.msg, 1, raw)
            elseif state == 'failed' then
                call('LREM', k.fai, 1, raw)
            elseif state == 'errors' then
                call('LREM', k.err, 1, raw)
            elseif state == 'delayed' then
                call('ZREM', k.dly, raw)
                release_hold(k, rec)
            else
                call('ZREM', k.bak, receipt)
                call('HDEL', k.inf, receipt)
            end
            bump(k, 'removed')
            n = n + 1
            log_event(k, s, now, 'delete', rec)
        end
    end
    return n
end

-- RMQ.REQUEUE q id [id …]
-- Keys: dly fai err msg st cfg log. Reply: how many messages went back to ready.
-- Delayed, then failed, then errored ones, each in its order, to the back of ready (a
-- delayed retry of an ordered queue to the front, as promotion does); failed/errored ones
-- start again at attempt 0 with no error.
function commands.requeue(q, args)
    local ids = id_set(args, 'requeue')
    local k = keys_of(q)
    local s = settings(k)
    local now = clock()
    need_moving(k, s)
    local n = 0
    for _, state in ipairs({ 'delayed', 'failed', 'errors' }) do
        for _, h in ipairs(hits_of(k, state, ids)) do
            checkpoint()
            local rec, raw = h[1], h[2]
            if state == 'delayed' then
                call('ZREM', k.dly, raw)
                release_hold(k, rec)
                -- As promotion does: a retry waiting out its backoff is a delivered message.
                to_ready(k, rec, rec[ATTEMPT] > 0 and s['ordered'] == 1)
            else
                call('LREM', state == 'failed' and k.fai or k.err, 1, raw)
                rec[ATTEMPT] = 0
                rec[ERROR] = ''
                to_ready(k, rec, false)
            end
            n = n + 1
            log_event(k, s, now, 'requeue', rec)
        end
    end
    return n
end

-- Deletes every message of one state; returns how many. Without the log the state's keys
-- are unlinked (Redis frees big ones in the background); with it, the messages go a page at
-- a time, each page logged as it goes, so the log never says purged of a message still there.
local function purge_state(k, s, now, state)
    local list = (state == 'ready' and k.msg) or (state == 'failed' and k.fai) or (state == 'errors' and k.err)
    local n = 0
    if s['log'] ~= 1 then
        if list then
            n = call('LLEN', list)
            call('UNLINK', list)
        elseif state == 'delayed' then
            n = call('ZCARD', k.dly)
            call('UNLINK', k.dly)
            call('HDEL', k.st, 'hold')
        else
            n = call('ZCARD', k.bak)
            call('UNLINK', k.bak, k.inf)
        end
        if n > 0 then
            bump(k, 'removed', n)
        end
    else
        local hold = hold_of(k)
        while true do
            checkpoint()
            local page
            if list then
                page = call('LPOP', list, PAGE) or {}
            else
                local flat = call('ZPOPMIN', state == 'delayed' and k.dly or k.bak, PAGE)
                page = {}
                for i = 1, #flat, 2 do
                    local raw = flat[i]
                    if state == 'inflight' then
                        raw = call('HGET', k.inf, flat[i])
                        call('HDEL', k.inf, flat[i])
                    end
                    if raw then
                        page[#page + 1] = raw
                    end
                end
                if #flat == 0 then
                    page = {}
                end
            end
            for _, raw in ipairs(page) do
                local ok, rec = pcall(decode, raw)
                if ok then
                    log_event(k, s, now, 'purge', rec)
                    if state == 'delayed' and rec[OFFSET] == hold then
                        call('HDEL', k.st, 'hold')
                    end
                end
            end
            if #page == 0 then
                break
            end
            bump(k, 'removed', #page)
            n = n + #page
        end
    end
    return n
end

-- RMQ.PURGE q READY|DELAYED|INFLIGHT|FAILED|ERRORS|ALL
-- Keys: the state's keys, st cfg log. Reply: how many messages were deleted.
function commands.purge(q, args)
    local raw = args[1]
    if raw == nil then
        fail_arity('purge')
    end
    local kw = string.upper(raw)
    if not STATE_KEYWORDS[kw] and kw ~= 'ALL' then
        fail_syntax(raw)
    end
    no_more(args, 2)
    local k = keys_of(q)
    local s = settings(k)
    local now = clock()
    local n = 0
    if kw ~= 'ALL' then
        n = purge_state(k, s, now, STATE_KEYWORDS[kw])
    else
        for _, state in ipairs(ALL_STATES) do
            n = n + purge_state(k, s, now, state)
        end
    end
    return n
end

-- RMQ.CONFIG q GET [name] · RMQ.CONFIG q SET name value [name value …]
-- Keys: cfg (log when log is turned off). Reply: GET a flat array of name, value bulk
-- strings (effective values); SET OK.
function commands.config(q, args)
    local sub = args[1]
    if sub == nil then
        fail_arity('config')
    end
    local k = keys_of(q)
    local SUB = string.upper(sub)
    if SUB == 'GET' then
        local name = args[2]
        if name ~= nil then
            local canonical = string.lower(name)
            if SETTING_RULE[canonical] == nil then
                fail("unknown setting '" .. name .. "'")
            end
            no_more(args, 3)
            return { canonical, dec(settings(k)[canonical]) }
        end
        local s = settings(k)
        local out = {}
        for _, n in ipairs(SETTING_NAMES) do
            out[#out + 1] = n
            out[#out + 1] = dec(s[n])
        end
        return out
    elseif SUB == 'SET' then
        if #args < 3 or #args % 2 == 0 then
            fail_arity('config')
        end
        local pairs_ = {}
        for i = 2, #args, 2 do
            local name, v = check_setting(args[i], args[i + 1])
            pairs_[#pairs_ + 1] = { name, v }
        end
        -- An explicit value stays an override, even when it equals today's default.
        for _, p in ipairs(pairs_) do
            call('HSET', k.cfg, p[1], dec(p[2]))
        end
        local s = settings(k)
        if s['log'] == 0 then
            call('DEL', k.log)
        elseif call('EXISTS', k.log) == 1 then
            call('XTRIM', k.log, 'MAXLEN', dec(s['log-maxlen']))
        end
        return redis.status_reply('OK')
    end
    fail_syntax(sub)
end

-- RMQ.QUEUES (0 keys)
-- Reply: sorted array of the queues that have any key (messages, counters, settings, log)
-- on this node. A SCAN of the keyspace: the library keeps no list of queues (it keeps nothing
-- of the data between calls, see settings_of).
function commands.queues(_, args)
    no_more(args, 1)
    local seen, out = {}, {}
    local cursor = '0'
    repeat
        local r = call('SCAN', cursor, 'MATCH', '*:{*}', 'COUNT', 1000)
        cursor = r[1]
        for _, key in ipairs(r[2]) do
            local prefix, name = key:match('^(%l+):{(.*)}$')
            if prefix and KEY_TYPES[prefix] and valid_queue(name) and not seen[name] then
                seen[name] = true
                out[#out + 1] = name
            end
        end
    until cursor == '0'
    table.sort(out, bytes_less)
    return out
end

-- The fields of a log entry, by name.
local function entry_fields(entry)
    local f = {}
    local flat = entry[2]
    for i = 1, #flat, 2 do
        f[flat[i]] = flat[i + 1]
    end
    return f
end

-- Log entries one probe of log_start reads at most to find a push.
local LOG_PROBE = 16

-- A stream id (or '-') before which no log entry has a message offset >= from, found in
-- O(log) short reads instead of reading the log from its start. Pushes are logged in offset
-- order and every event of a message comes after its push, so no entry before the push of
-- `from` has an offset >= from (also when that push was trimmed away). A binary search on time
-- moves its lower bound to a time only when the first push it finds there is below `from`;
-- where it finds none within LOG_PROBE entries it looks earlier, which stays a lower bound.
local function log_start(k, from, last)
    if from <= 1 then
        return '-'
    end
    local first = call('XRANGE', k.log, '-', last, 'COUNT', 1)
    local newest = call('XREVRANGE', k.log, last, '-', 'COUNT', 1)
    if #first == 0 or #newest == 0 then
        return '-'
    end
    local lo = tonumber(string.match(first[1][1], '^(%d+)'))
    local hi = tonumber(string.match(newest[1][1], '^(%d+)'))
    while lo < hi do
        local mid = lo + math.floor((hi - lo + 1) / 2)
        local push = nil
        -- One entry first (usually a push), a few more when it is another event.
        for _, count in ipairs({ 1, LOG_PROBE }) do
            for _, entry in ipairs(call('XRANGE', k.log, string.format('%.0f', mid), last, 'COUNT', count)) do
                local f = entry_fields(entry)
                if f.event == 'push' then
                    push = tonumber(f.offset or '')
                    break
                end
            end
            if push ~= nil then
                break
            end
        end
        if push ~= nil and push < from then
            lo = mid
        else
            hi = mid - 1
        end
    end
    return string.format('%.0f', lo)
end

-- Calls fn(fields) for every log entry (up to stream id `last`, '+' for all) whose message
-- offset is within [from, to] (to = nil: no bound), oldest first, a page at a time, until fn
-- returns true. It starts where log_start says, and with `to` it stops at the first push past
-- it (later entries are of later messages or of earlier ones, never of [from, to] pushes).
local function each_log_entry(k, from, to, last, fn, pushes_only)
    local start = log_start(k, from, last)
    -- Small pages first (a LOG or REPLAY of a few entries reads a few), then full ones.
    local size = 16
    while true do
        local chunk = call('XRANGE', k.log, start, last, 'COUNT', size)
        for _, entry in ipairs(chunk) do
            local f = entry_fields(entry)
            local off = tonumber(f.offset or '')
            if pushes_only and to ~= nil and off ~= nil and off > to and f.event == 'push' then
                return
            end
            if off ~= nil and off >= from and (to == nil or off <= to) then
                if fn(f) then
                    return
                end
            end
        end
        if #chunk < size then
            return
        end
        start = '(' .. chunk[#chunk][1]
        size = math.min(size * 2, PAGE)
    end
end

-- Fields of log events besides offset event id time and a push's message (docs/commands.md).
local LOG_NUMBER_FIELDS = { 'attempt', 'deadline', 'due' }
local LOG_TEXT_FIELDS = { 'consumer', 'error' }

-- RMQ.LOG q [FROM offset] [COUNT n]
-- Keys: log. Reply: array of maps (offset event id time, + body tag key headers for push).
function commands.log(q, args)
    local o = walk(args)
    local from, count
    while true do
        local raw, kw = o:keyword()
        if raw == nil then break end
        if kw == 'FROM' then
            once(from, raw)
            from = o:number('FROM', 0)
        elseif kw == 'COUNT' then
            once(count, raw)
            count = o:count()
        else
            fail_syntax(raw)
        end
    end
    local k = keys_of(q)
    local out = {}
    count = count or 100
    each_log_entry(k, from or 0, nil, '+', function(f)
        local m = { offset = tonumber(f.offset), event = f.event or '', id = f.id or '',
            time = tonumber(f.time or '0') or 0 }
        if f.event == 'push' then
            m.body, m.tag, m.key = f.body or '', f.tag or '', f.key or ''
            local ok, h = pcall(unpack_value, f.headers or '\144')
            m.headers = headers_map(ok and type(h) == 'table' and h or {})
        end
        -- The event's own fields: numbers as integers, text as it was logged.
        for _, name in ipairs(LOG_NUMBER_FIELDS) do
            if f[name] ~= nil then
                m[name] = tonumber(f[name]) or 0
            end
        end
        for _, name in ipairs(LOG_TEXT_FIELDS) do
            if f[name] ~= nil then
                m[name] = f[name]
            end
        end
        out[#out + 1] = { map = m }
        return #out >= count
    end)
    return out
end

-- RMQ.REPLAY q FROM offset [TO offset]
-- Keys: log msg st dly bak cfg. Reply: how many copies were pushed (new ids and offsets,
-- header replay-of = the original id).
function commands.replay(q, args)
    local o = walk(args)
    local from, to
    while true do
        local raw, kw = o:keyword()
        if raw == nil then break end
        if kw == 'FROM' then
            once(from, raw)
            from = o:number('FROM', 0)
        elseif kw == 'TO' then
            once(to, raw)
            to = o:number('TO', 0)
        else
            fail_syntax(raw)
        end
    end
    if from == nil then
        fail_arity('replay')
    end
    local k = keys_of(q)
    local s = settings(k)
    local now = clock()
    need(k, 'msg', 'st')
    if s['log'] == 1 then
        need(k, 'log')
    end
    -- The copies are logged too: only what the log held when REPLAY began is replayed.
    local newest = call('XREVRANGE', k.log, '+', '-', 'COUNT', 1)
    if #newest == 0 then
        return 0
    end
    local last = newest[1][1]
    if s['maxlen'] > 0 then
        -- All copies fit or none is pushed: count them first.
        local n = 0
        each_log_entry(k, from, to, last, function(f)
            if f.event == 'push' then
                n = n + 1
            end
        end, true)
        local held = call('LLEN', k.msg) + call('ZCARD', k.dly) + call('ZCARD', k.bak)
        if n > 0 and held + n > s['maxlen'] then
            fail('queue full')
        end
    end
    local pushed = 0
    each_log_entry(k, from, to, last, function(f)
        if f.event ~= 'push' then
            return false
        end
        checkpoint()
        local ok, headers = pcall(unpack_value, f.headers or '\144')
        if not ok or type(headers) ~= 'table' then
            headers = {}
        end
        local replaced = false
        for i = 1, #headers, 2 do
            if headers[i] == 'replay-of' then
                headers[i + 1] = f.id or ''
                replaced = true
            end
        end
        if not replaced then
            headers[#headers + 1] = 'replay-of'
            headers[#headers + 1] = f.id or ''
        end
        local offset = next_offset(k)
        local rec = { '', f.body or '', f.tag or '', f.key or '', headers, now, 0, offset, 0, '', '' }
        to_ready(k, rec, false)
        log_push(k, s, now, rec, nil)
        pushed = pushed + 1
        return false
    end, true)
    return pushed
end

---------------------------------------------------------------------------------------
-- Registration: one function per command, key count checked, faults caught.
---------------------------------------------------------------------------------------

-- An error text as the module sends it (its replies go through Rust strings and C): invalid
-- UTF-8 (an argument echoed as typed) becomes U+FFFD as String::from_utf8_lossy does, one per
-- maximal invalid subpart, and NUL, CR and LF become spaces. Clients can then always read it.
local function reply_text(s)
    if not s:find('[%z\r\n\128-\255]') then
        return s
    end
    local out, i, n = {}, 1, #s
    while i <= n do
        local c = s:byte(i)
        local len, lo, hi = 0, 0x80, 0xBF
        if c < 0x80 then
            len = 1
        elseif c >= 0xC2 and c <= 0xDF then
            len = 2
        elseif c >= 0xE0 and c <= 0xEF then
            len = 3
            if c == 0xE0 then lo = 0xA0 elseif c == 0xED then hi = 0x9F end
        elseif c >= 0xF0 and c <= 0xF4 then
            len = 4
            if c == 0xF0 then lo = 0x90 elseif c == 0xF4 then hi = 0x8F end
        end
        if len == 1 then
            out[#out + 1] = (c == 0 or c == 10 or c == 13) and ' ' or string.char(c)
            i = i + 1
        elseif len == 0 then
            out[#out + 1] = '\239\191\189'
            i = i + 1
        else
            -- The lead byte and as many continuation bytes as fit this sequence.
            local j = i + 1
            while j < i + len do
                local b = s:byte(j)
                local l, h = 0x80, 0xBF
                if j == i + 1 then l, h = lo, hi end
                if b == nil or b < l or b > h then break end
                j = j + 1
            end
            out[#out + 1] = (j == i + len) and s:sub(i, j - 1) or '\239\191\189'
            i = j
        end
    end
    return table.concat(out)
end

-- The module checks the arity of these commands before the queue name.
-- Arguments each command needs after the queue name: fewer is an arity error, reported
-- before the queue name is checked (as Redis checks arity first), the same in the module.
local MIN_ARGS = { push = 1, ack = 1, nack = 1, touch = 1, get = 1, del = 1, requeue = 1, purge = 1,
    config = 1, replay = 1 }

-- Functions that free memory or write a fixed amount run when Redis is at maxmemory
-- (noeviction), so consumers can drain a full queue; PUSH and REPLAY add messages and are
-- refused there, as Redis refuses its own commands that grow the dataset.
local ALLOW_OOM = { fetch = true, ack = true, nack = true, touch = true, recover = true, purge = true,
    del = true, requeue = true, config = true }

-- The queue's keys in the order a cluster client declares them after the queue name
-- (FCALL rmq_x 11 q msg:{q} … log:{q}): with every key declared, Redis itself refuses
-- (TRYAGAIN, ASK) a call while the queue's slot moves between nodes, instead of letting it
-- run on a node that holds only part of the queue.
local KEY_ORDER = { 'msg', 'dly', 'bak', 'inf', 'fai', 'err', 'cfg', 'st', 'dup', 'log' }

local function declares_every_key(q, keys)
    local k = keys_of(q)
    for i, name in ipairs(KEY_ORDER) do
        if keys[i + 1] ~= k[name] then
            return false
        end
    end
    return true
end

-- What the library builds once, at its first call: while it loads, Redis offers only redis.*
-- (no string, no math), so tables built with them wait until then.
local ready = false
local function setup()
    char, byte, sub, format, random = string.char, string.byte, string.sub, string.format, math.random
    for i = 0, SMALL_MAX do
        local text = string.format('%d', i)
        SMALL_NUMBER[text] = i
        SMALL_TEXT[i] = text
    end
    for i = 0, 31 do
        FIXSTR[i] = char(0xa0 + i)
    end
    for i = 0, 127 do
        FIXINT[i] = char(i)
    end
    for i = 0, 255 do
        HEX[i] = format('%02x', i)
    end
    ready = true
end

local function register(name, readonly)
    local handler = commands[name]
    local fname = 'rmq_' .. name
    local nkeys = (name == 'queues') and 0 or 1
    local min_args = MIN_ARGS[name] or 0
    local def = {
        function_name = fname,
        callback = function(keys, args)
            call = redis.call
            if not ready then
                setup()
            end
            if #keys ~= nkeys and not (nkeys == 1 and #keys == 1 + #KEY_ORDER) then
                if nkeys == 0 then
                    return redis.error_reply('ERR ' .. fname .. ' takes no keys')
                end
                return redis.error_reply('ERR ' .. fname .. ' takes exactly one key, the queue name')
            end
            local q = keys[1]
            if #keys > 1 and not (valid_queue(q) and declares_every_key(q, keys)) then
                return redis.error_reply('ERR ' .. fname .. ' with 11 keys takes the queue name and then ' ..
                    'msg:{q} dly:{q} bak:{q} inf:{q} fai:{q} err:{q} cfg:{q} st:{q} dup:{q} log:{q}')
            end
            if #args < min_args then
                return redis.error_reply("ERR wrong number of arguments for 'rmq." .. name .. "' command")
            end
            if nkeys == 1 and not valid_queue(q) then
                return redis.error_reply('ERR invalid queue name')
            end
            local ok, res = pcall(handler, q, args)
            if ok then
                return res
            end
            if type(res) == 'table' and res.rmq then
                return redis.error_reply(reply_text(res.rmq))
            end
            -- Inside the module: the command stopped at its Lua budget (see the module's
            -- lua.rs), which the module reports itself.
            if type(res) ~= 'table' and tostring(res):find('rmq: command stopped', 1, true) then
                error(res, 0)
            end
            -- An error Redis gave a command of ours (a key of another type met by a read,
            -- OOM, …): Redis's own words, which tell the user what is wrong.
            local said = type(res) == 'table' and res.err or res
            if type(said) == 'string' and said:find('^%u+ ') then
                return redis.error_reply(reply_text(said))
            end
            local detail = type(res) == 'table' and (res.err or '?') or tostring(res)
            redis.log(redis.LOG_WARNING, 'rmq: ' .. fname .. ' internal error: ' .. tostring(detail))
            return redis.error_reply('ERR internal error')
        end,
    }
    if readonly then
        def.flags = { 'no-writes' }
    elseif ALLOW_OOM[name] then
        def.flags = { 'allow-oom' }
    end
    redis.register_function(def)
end

-- (Only redis.* is available while the library loads: plain loops here, no ipairs.)
local WRITERS = { 'push', 'fetch', 'ack', 'nack', 'touch', 'recover', 'purge', 'del', 'requeue',
    'config', 'replay' }
local READERS = { 'stats', 'peek', 'get', 'queues', 'log' }
for i = 1, #WRITERS do
    register(WRITERS[i], false)
end
for i = 1, #READERS do
    register(READERS[i], true)
end
