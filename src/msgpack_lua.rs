//! `cmsgpack.pack` / `cmsgpack.unpack` for the module's Lua, encoding exactly as Redis's
//! lua_cmsgpack does, so lua/rmq.lua writes the same bytes inside the module as in Redis.

use mlua::{Lua, MultiValue, Result, Table, Value};

const MAX_NESTING: usize = 16;

fn write_uint(out: &mut Vec<u8>, n: u64) {
    match n {
        0..=0x7f => out.push(n as u8),
        0x80..=0xff => out.extend_from_slice(&[0xcc, n as u8]),
        0x100..=0xffff => {
            out.push(0xcd);
            out.extend_from_slice(&(n as u16).to_be_bytes())
        }
        0x1_0000..=0xffff_ffff => {
            out.push(0xce);
            out.extend_from_slice(&(n as u32).to_be_bytes())
        }
        _ => {
            out.push(0xcf);
            out.extend_from_slice(&n.to_be_bytes())
        }
    }
}

fn write_int(out: &mut Vec<u8>, n: i64) {
    if n >= 0 {
        return write_uint(out, n as u64);
    }
    if n >= -32 {
        out.push(n as i8 as u8);
    } else if n >= -128 {
        out.extend_from_slice(&[0xd0, n as i8 as u8]);
    } else if n >= -32768 {
        out.push(0xd1);
        out.extend_from_slice(&(n as i16).to_be_bytes());
    } else if n >= -2_147_483_648 {
        out.push(0xd2);
        out.extend_from_slice(&(n as i32).to_be_bytes());
    } else {
        out.push(0xd3);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

fn write_len(out: &mut Vec<u8>, n: usize, fix: u8, fix_max: usize, b16: u8, b32: u8) {
    if n < fix_max {
        out.push(fix | n as u8);
    } else if n <= 0xffff {
        out.push(b16);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(b32);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
}

fn write_bytes(out: &mut Vec<u8>, b: &[u8]) {
    if b.len() < 32 {
        out.push(0xa0 | b.len() as u8);
    } else if b.len() <= 0xff {
        out.extend_from_slice(&[0xd9, b.len() as u8]);
    } else if b.len() <= 0xffff {
        out.push(0xda);
        out.extend_from_slice(&(b.len() as u16).to_be_bytes());
    } else {
        out.push(0xdb);
        out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    }
    out.extend_from_slice(b);
}

fn write_number(out: &mut Vec<u8>, f: f64) {
    if f.is_finite() && f == f.trunc() && f.abs() < 9.3e18 {
        write_int(out, f as i64);
    } else if (f as f32) as f64 == f {
        out.push(0xca);
        out.extend_from_slice(&(f as f32).to_be_bytes());
    } else {
        out.push(0xcb);
        out.extend_from_slice(&f.to_be_bytes());
    }
}

/// lua_cmsgpack's rule: a table is an array when its keys are exactly 1..n.
fn is_array(t: &Table) -> Result<bool> {
    let (mut count, mut max) = (0i64, 0i64);
    for pair in t.pairs::<Value, Value>() {
        let (k, _) = pair?;
        let n = match k {
            Value::Integer(i) => i as f64,
            Value::Number(n) => n,
            _ => return Ok(false),
        };
        if n <= 0.0 || n != n.trunc() {
            return Ok(false);
        }
        max = max.max(n as i64);
        count += 1;
    }
    Ok(max == count)
}

fn encode(out: &mut Vec<u8>, v: &Value, depth: usize) -> Result<()> {
    match v {
        Value::Nil => out.push(0xc0),
        Value::Boolean(b) => out.push(if *b { 0xc3 } else { 0xc2 }),
        Value::Integer(i) => write_int(out, *i),
        Value::Number(n) => write_number(out, *n),
        Value::String(s) => write_bytes(out, &s.as_bytes()),
        Value::Table(t) if depth < MAX_NESTING => {
            if is_array(t)? {
                let n = t.raw_len();
                write_len(out, n, 0x90, 16, 0xdc, 0xdd);
                for i in 1..=n {
                    encode(out, &t.raw_get::<Value>(i)?, depth + 1)?;
                }
            } else {
                let pairs: Vec<(Value, Value)> = t.pairs::<Value, Value>().collect::<Result<_>>()?;
                write_len(out, pairs.len(), 0x80, 16, 0xde, 0xdf);
                for (k, v) in &pairs {
                    encode(out, k, depth + 1)?;
                    encode(out, v, depth + 1)?;
                }
            }
        }
        _ => out.push(0xc0),
    }
    Ok(())
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        let s = self.buf.get(self.pos..self.pos + n).ok_or_else(|| mlua::Error::runtime("Missing bytes in input."))?;
        self.pos += n;
        Ok(s)
    }
    fn be(&mut self, n: usize) -> Result<u64> {
        Ok(self.take(n)?.iter().fold(0u64, |a, b| (a << 8) | *b as u64))
    }

    fn value(&mut self, lua: &Lua) -> Result<Value> {
        let b = self.take(1)?[0];
        Ok(match b {
            0x00..=0x7f => Value::Number(b as f64),
            0x80..=0x8f => self.map(lua, (b & 0x0f) as usize)?,
            0x90..=0x9f => self.array(lua, (b & 0x0f) as usize)?,
            0xa0..=0xbf => self.string(lua, (b & 0x1f) as usize)?,
            0xc0 => Value::Nil,
            0xc2 => Value::Boolean(false),
            0xc3 => Value::Boolean(true),
            0xc4 | 0xd9 => {
                let n = self.be(1)? as usize;
                self.string(lua, n)?
            }
            0xc5 | 0xda => {
                let n = self.be(2)? as usize;
                self.string(lua, n)?
            }
            0xc6 | 0xdb => {
                let n = self.be(4)? as usize;
                self.string(lua, n)?
            }
            0xca => Value::Number(f32::from_bits(self.be(4)? as u32) as f64),
            0xcb => Value::Number(f64::from_bits(self.be(8)?)),
            0xcc => Value::Number(self.be(1)? as f64),
            0xcd => Value::Number(self.be(2)? as f64),
            0xce => Value::Number(self.be(4)? as f64),
            0xcf => Value::Number(self.be(8)? as f64),
            0xd0 => Value::Number(self.be(1)? as u8 as i8 as f64),
            0xd1 => Value::Number(self.be(2)? as u16 as i16 as f64),
            0xd2 => Value::Number(self.be(4)? as u32 as i32 as f64),
            0xd3 => Value::Number(self.be(8)? as i64 as f64),
            0xdc => {
                let n = self.be(2)? as usize;
                self.array(lua, n)?
            }
            0xdd => {
                let n = self.be(4)? as usize;
                self.array(lua, n)?
            }
            0xde => {
                let n = self.be(2)? as usize;
                self.map(lua, n)?
            }
            0xdf => {
                let n = self.be(4)? as usize;
                self.map(lua, n)?
            }
            0xe0..=0xff => Value::Number(b as i8 as f64),
            _ => return Err(mlua::Error::runtime("Bad data format in input.")),
        })
    }

    fn string(&mut self, lua: &Lua, n: usize) -> Result<Value> {
        let s = self.take(n)?.to_vec();
        Ok(Value::String(lua.create_string(&s)?))
    }

    fn array(&mut self, lua: &Lua, n: usize) -> Result<Value> {
        let t = lua.create_table()?;
        for i in 1..=n {
            let v = self.value(lua)?;
            t.raw_set(i, v)?;
        }
        Ok(Value::Table(t))
    }

    fn map(&mut self, lua: &Lua, n: usize) -> Result<Value> {
        let t = lua.create_table()?;
        for _ in 0..n {
            let k = self.value(lua)?;
            let v = self.value(lua)?;
            if k != Value::Nil {
                t.raw_set(k, v)?;
            }
        }
        Ok(Value::Table(t))
    }
}

/// Installs the global `cmsgpack` table.
pub fn install(lua: &Lua) -> Result<()> {
    let t = lua.create_table()?;
    t.set(
        "pack",
        lua.create_function(|lua, args: MultiValue| {
            let mut out = Vec::new();
            for v in args.iter() {
                encode(&mut out, v, 0)?;
            }
            lua.create_string(&out)
        })?,
    )?;
    t.set(
        "unpack",
        lua.create_function(|lua, s: mlua::LuaString| {
            let bytes = s.as_bytes().to_vec();
            let mut r = Reader { buf: &bytes, pos: 0 };
            let mut out = Vec::new();
            while r.pos < bytes.len() {
                out.push(r.value(lua)?);
            }
            Ok(MultiValue::from_iter(out))
        })?,
    )?;
    lua.globals().set("cmsgpack", t)
}
