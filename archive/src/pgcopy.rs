//! PostgreSQL's binary COPY format, written by hand for the few column types the archive
//! tables have (`BIGINT`, text, `TIMESTAMPTZ`, `JSONB`): `COPY … FROM STDIN (FORMAT binary)`
//! takes a batch's new rows with no per-row statement work on the server (no array text to
//! parse, no casts, no `ON CONFLICT` check; the heap takes the rows many at a time).
//!
//! The layout (PostgreSQL docs, "COPY", "Binary Format"): a signature and two 32-bit words,
//! then per row a 16-bit field count and per field a 32-bit length (-1: NULL) and the value
//! in the type's binary form, then a 16-bit -1. Big-endian throughout.

use crate::db::clamp_ms;

const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// Unix ms of PostgreSQL's timestamp epoch, 2000-01-01 00:00:00 UTC.
const PG_EPOCH_MS: i64 = 946_684_800_000;

/// Rows in PostgreSQL's binary COPY format, one value at a time in column order.
pub struct CopyRows {
    buf: Vec<u8>,
    cols: usize,
    /// Values written to the current row.
    in_row: usize,
    rows: usize,
}

impl CopyRows {
    /// Rows of `cols` columns.
    pub fn new(cols: usize) -> CopyRows {
        let mut buf = Vec::with_capacity(64 << 10);
        buf.extend_from_slice(SIGNATURE);
        buf.extend_from_slice(&0i32.to_be_bytes()); // flags: no OIDs
        buf.extend_from_slice(&0i32.to_be_bytes()); // no header extension
        CopyRows { buf, cols, in_row: cols, rows: 0 }
    }

    /// Starts a row: every one of its `cols` values follows.
    pub fn row(&mut self) {
        assert_eq!(self.in_row, self.cols, "the previous row got {} of its {} values", self.in_row, self.cols);
        self.buf.extend_from_slice(&(self.cols as i16).to_be_bytes());
        self.in_row = 0;
        self.rows += 1;
    }

    fn field(&mut self, bytes: Option<&[u8]>) {
        self.in_row += 1;
        debug_assert!(self.in_row <= self.cols, "more values than columns");
        match bytes {
            None => self.buf.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(b) => {
                self.buf.extend_from_slice(&(b.len() as i32).to_be_bytes());
                self.buf.extend_from_slice(b);
            }
        }
    }

    /// A `BIGINT`.
    pub fn int(&mut self, v: Option<i64>) {
        self.field(v.map(i64::to_be_bytes).as_ref().map(|b| &b[..]));
    }

    /// A text column (`TEXT`, `VARCHAR`): UTF-8 without NUL, as every `String` the archive
    /// writes is (`event::sql_text`, `store::encode_body`); the server checks it anyway.
    pub fn text(&mut self, v: Option<&str>) {
        self.field(v.map(str::as_bytes));
    }

    /// A `TIMESTAMPTZ` of unix ms, clamped as every other write clamps them.
    pub fn ms(&mut self, v: Option<i64>) {
        let us = v.map(|ms| ((clamp_ms(ms) - PG_EPOCH_MS) * 1000).to_be_bytes());
        self.field(us.as_ref().map(|b| &b[..]));
    }

    /// A `JSONB` given as JSON text (its binary form is a version byte, 1, and the text).
    pub fn json(&mut self, v: &str) {
        self.in_row += 1;
        self.buf.extend_from_slice(&(v.len() as i32 + 1).to_be_bytes());
        self.buf.push(1);
        self.buf.extend_from_slice(v.as_bytes());
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The data to send, with its trailer.
    pub fn finish(mut self) -> Vec<u8> {
        assert_eq!(self.in_row, self.cols, "the last row got {} of its {} values", self.in_row, self.cols);
        self.buf.extend_from_slice(&(-1i16).to_be_bytes());
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_laid_out_as_postgresql_reads_them() {
        let mut c = CopyRows::new(4);
        c.row();
        c.int(Some(-2));
        c.text(None);
        c.ms(Some(PG_EPOCH_MS + 5));
        c.json("{}");
        assert_eq!(c.rows(), 1);
        let b = c.finish();
        let mut want = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0".to_vec();
        want.extend_from_slice(&[0, 4]);
        want.extend_from_slice(&[0, 0, 0, 8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe]);
        want.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        want.extend_from_slice(&[0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0x13, 0x88]);
        want.extend_from_slice(&[0, 0, 0, 3, 1, b'{', b'}']);
        want.extend_from_slice(&[0xff, 0xff]);
        assert_eq!(b, want);
    }

    #[test]
    fn times_are_clamped_like_every_other_write() {
        let mut c = CopyRows::new(1);
        c.row();
        c.ms(Some(-1));
        let b = c.finish();
        // 1970-01-01 is 946,684,800 s before PostgreSQL's epoch.
        assert_eq!(&b[25..33], &(-PG_EPOCH_MS * 1000).to_be_bytes());
    }

    #[test]
    #[should_panic(expected = "the last row got 1 of its 2 values")]
    fn a_short_row_is_a_bug_caught_before_sending() {
        let mut c = CopyRows::new(2);
        c.row();
        c.int(Some(1));
        c.finish();
    }
}
