//! What `COMMAND INFO` and `COMMAND DOCS` say of each RMQ.* command: a summary, its
//! complexity, its arguments (for redis-cli's hints), and its key spec — the queue name as its
//! one key, read-only for the commands that only read, so ACL read-only users (`%R~q`) can
//! run them and cluster clients route every command by the queue's slot.

use std::ffi::CString;
use std::os::raw::c_int;
use std::ptr;

use redis_module::raw;

/// How a command uses its queue (the key spec's flags).
#[derive(Clone, Copy)]
pub enum Access {
    /// No key (RMQ.QUEUES).
    None,
    Read,
    Insert,
    Update,
    Delete,
}

impl Access {
    fn flags(self) -> u64 {
        (match self {
            Access::None => 0,
            Access::Read => raw::REDISMODULE_CMD_KEY_RO | raw::REDISMODULE_CMD_KEY_ACCESS,
            Access::Insert => raw::REDISMODULE_CMD_KEY_RW | raw::REDISMODULE_CMD_KEY_INSERT,
            Access::Update => raw::REDISMODULE_CMD_KEY_RW | raw::REDISMODULE_CMD_KEY_ACCESS | raw::REDISMODULE_CMD_KEY_UPDATE,
            Access::Delete => raw::REDISMODULE_CMD_KEY_RW | raw::REDISMODULE_CMD_KEY_DELETE,
        }) as u64
    }
}

/// One argument of a command, for COMMAND DOCS.
pub struct Arg {
    name: &'static str,
    kind: raw::RedisModuleCommandArgType,
    token: Option<&'static str>,
    flags: u32,
    subargs: Vec<Arg>,
}

fn arg(name: &'static str, kind: raw::RedisModuleCommandArgType) -> Arg {
    Arg { name, kind, token: None, flags: raw::REDISMODULE_CMD_ARG_NONE, subargs: Vec::new() }
}

/// The queue name, the command's key.
pub fn queue() -> Arg {
    arg("queue", raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_KEY)
}

pub fn string(name: &'static str) -> Arg {
    arg(name, raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_STRING)
}

pub fn integer(name: &'static str) -> Arg {
    arg(name, raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_INTEGER)
}

pub fn unix_time(name: &'static str) -> Arg {
    arg(name, raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_UNIX_TIME)
}

/// A keyword alone (`EXPIRED`).
pub fn token(word: &'static str) -> Arg {
    Arg { token: Some(word), ..arg(word, raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_PURE_TOKEN) }
}

/// One of several.
pub fn one_of(name: &'static str, choices: Vec<Arg>) -> Arg {
    Arg { subargs: choices, ..arg(name, raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_ONEOF) }
}

/// Several arguments that go together.
pub fn block(name: &'static str, parts: Vec<Arg>) -> Arg {
    Arg { subargs: parts, ..arg(name, raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_BLOCK) }
}

impl Arg {
    /// Preceded by a keyword (`ID id`).
    pub fn after(mut self, word: &'static str) -> Arg {
        self.token = Some(word);
        self
    }
    pub fn optional(mut self) -> Arg {
        self.flags |= raw::REDISMODULE_CMD_ARG_OPTIONAL;
        self
    }
    pub fn multiple(mut self) -> Arg {
        self.flags |= raw::REDISMODULE_CMD_ARG_MULTIPLE;
        self
    }
    /// Repeated with its keyword each time (`[HEADER name value]…`).
    pub fn multiple_token(mut self) -> Arg {
        self.flags |= raw::REDISMODULE_CMD_ARG_MULTIPLE | raw::REDISMODULE_CMD_ARG_MULTIPLE_TOKEN;
        self
    }
}

/// A command's documentation.
pub struct Doc {
    pub summary: &'static str,
    pub complexity: &'static str,
    pub access: Access,
    pub args: Vec<Arg>,
}

/// Keeps the C strings of the info alive until Redis has copied them.
#[derive(Default)]
struct Strings(Vec<CString>);

impl Strings {
    fn of(&mut self, s: &str) -> *const std::os::raw::c_char {
        self.0.push(CString::new(s).expect("no NUL in command docs"));
        self.0.last().unwrap().as_ptr()
    }
}

/// The raw arguments, each array closed by a zeroed entry; `arenas` keeps the arrays alive.
fn raw_args(args: &[Arg], strings: &mut Strings, arenas: &mut Vec<Vec<raw::RedisModuleCommandArg>>) -> *mut raw::RedisModuleCommandArg {
    let mut out: Vec<raw::RedisModuleCommandArg> = Vec::with_capacity(args.len() + 1);
    for a in args {
        let subargs = if a.subargs.is_empty() { ptr::null_mut() } else { raw_args(&a.subargs, strings, arenas) };
        out.push(raw::RedisModuleCommandArg {
            name: strings.of(a.name),
            type_: a.kind,
            key_spec_index: if a.kind == raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_KEY { 0 } else { -1 },
            token: a.token.map_or(ptr::null(), |t| strings.of(t)),
            summary: ptr::null(),
            since: ptr::null(),
            flags: a.flags as c_int,
            deprecated_since: ptr::null(),
            subargs,
            display_text: ptr::null(),
        });
    }
    // SAFETY: an all-zero RedisModuleCommandArg is the array's terminator, as Redis expects.
    out.push(unsafe { std::mem::zeroed() });
    let p = out.as_mut_ptr();
    arenas.push(out);
    p
}

/// Sets the command's info (COMMAND INFO / DOCS, key specs). Redis copies it all.
pub fn set(command: *mut raw::RedisModuleCommand, doc: &Doc) -> bool {
    // SAFETY: reading a function pointer Redis filled in at load (None on a Redis without it).
    let Some(set_info) = (unsafe { raw::RedisModule_SetCommandInfo }) else { return false };
    let mut strings = Strings::default();
    let mut arenas = Vec::new();
    let version = raw::RedisModuleCommandInfoVersion {
        version: 1,
        sizeof_historyentry: std::mem::size_of::<raw::RedisModuleCommandHistoryEntry>(),
        sizeof_keyspec: std::mem::size_of::<raw::RedisModuleCommandKeySpec>(),
        sizeof_arg: std::mem::size_of::<raw::RedisModuleCommandArg>(),
    };
    // SAFETY: all-zero key specs are valid values of these plain C structs; the spec is the
    // queue at argument 1, alone; the last, zeroed one closes the array.
    let mut key_specs: Vec<raw::RedisModuleCommandKeySpec> = Vec::new();
    if !matches!(doc.access, Access::None) {
        let mut spec: raw::RedisModuleCommandKeySpec = unsafe { std::mem::zeroed() };
        spec.flags = doc.access.flags();
        spec.begin_search_type = raw::RedisModuleKeySpecBeginSearchType_REDISMODULE_KSPEC_BS_INDEX;
        spec.bs.index.pos = 1;
        spec.find_keys_type = raw::RedisModuleKeySpecFindKeysType_REDISMODULE_KSPEC_FK_RANGE;
        spec.fk.range.lastkey = 0;
        spec.fk.range.keystep = 1;
        spec.fk.range.limit = 0;
        key_specs.push(spec);
    }
    // SAFETY: the zeroed key spec that closes the array.
    key_specs.push(unsafe { std::mem::zeroed() });
    let args = raw_args(&doc.args, &mut strings, &mut arenas);
    let info = raw::RedisModuleCommandInfo {
        version: &version,
        summary: strings.of(doc.summary),
        complexity: strings.of(doc.complexity),
        since: strings.of("1.0.0"),
        history: ptr::null_mut(),
        tips: ptr::null(),
        // No arity check by Redis: the commands check their own (see lib.rs).
        arity: -1,
        key_specs: key_specs.as_mut_ptr(),
        args,
    };
    // SAFETY: every pointer in `info` points into `strings`, `arenas` and `key_specs`, alive
    // until this returns; Redis copies what it keeps.
    unsafe { set_info(command, &info) == raw::REDISMODULE_OK as c_int }
}
