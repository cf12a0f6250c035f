//! Finding archived messages: the filters of `rmq archive search` and `replay`, as SQL.

use crate::db::{Db, Sql};
use crate::error::Result;
use crate::fold::Status;
use crate::store::{self, Message, MESSAGES};

/// Which messages of one queue (every filter given must hold).
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub queue: String,
    pub id: Option<String>,
    pub key: Option<String>,
    pub tag: Option<String>,
    /// Any of these statuses (none: any status).
    pub statuses: Vec<Status>,
    /// Created at or after (unix ms).
    pub since_ms: Option<i64>,
    /// Created before (unix ms).
    pub until_ms: Option<i64>,
    /// The body (stored as text) contains this, case-sensitive.
    pub body_contains: Option<String>,
    pub from_offset: Option<i64>,
    pub to_offset: Option<i64>,
}

/// How many messages match.
pub async fn count(db: &Db, f: &Filter) -> Result<u64> {
    let mut s = db.sql();
    s.push(&format!("SELECT COUNT(*) FROM {MESSAGES} WHERE "));
    conditions(&mut s, f);
    let row = s.one_off().fetch_one(&db.pool).await?;
    use sqlx::Row as _;
    Ok(row.try_get::<i64, _>(0)?.max(0) as u64)
}

/// Up to `limit` matching messages with an offset above `after`, in offset order.
pub async fn find(db: &Db, f: &Filter, after: Option<i64>, limit: i64) -> Result<Vec<Message>> {
    let b = db.backend;
    let off = b.col("offset");
    let mut s = db.sql();
    s.push(&format!("SELECT {} FROM {MESSAGES} WHERE ", store::message_select(b)));
    conditions(&mut s, f);
    if let Some(a) = after {
        s.push(&format!(" AND {off} > ")).arg(a);
    }
    s.push(&format!(" ORDER BY {off} LIMIT {}", limit.max(0)));
    let rows = s.one_off().fetch_all(&db.pool).await?;
    rows.iter().map(store::message_from).collect()
}

/// The WHERE conditions of a filter.
fn conditions(s: &mut Sql, f: &Filter) {
    let b = s.backend;
    let off = b.col("offset");
    s.push("queue = ").arg(f.queue.clone());
    if let Some(id) = &f.id {
        s.push(" AND id = ").arg(id.clone());
    }
    if let Some(k) = &f.key {
        s.push(&format!(" AND {} = ", b.col("key"))).arg(k.clone());
    }
    if let Some(t) = &f.tag {
        s.push(" AND tag = ").arg(t.clone());
    }
    if !f.statuses.is_empty() {
        s.push(" AND status IN ").list(f.statuses.iter().map(|st| st.as_str().to_string()));
    }
    if let Some(t) = f.since_ms {
        s.push(" AND create_time >= ").ts(Some(t));
    }
    if let Some(t) = f.until_ms {
        s.push(" AND create_time < ").ts(Some(t));
    }
    if let Some(text) = &f.body_contains {
        s.push(" AND body_encoding = 'text' AND ").contains("body", text.clone());
    }
    if let Some(o) = f.from_offset {
        s.push(&format!(" AND {off} >= ")).arg(o);
    }
    if let Some(o) = f.to_offset {
        s.push(&format!(" AND {off} <= ")).arg(o);
    }
}

/// One line for a person to read.
pub fn human_line(m: &Message) -> String {
    let mut line = format!("{}  {}  {}  {}  attempts={}", m.offset, m.id, m.status, m.create_time, m.attempts);
    if !m.tag.is_empty() {
        line += &format!("  tag={}", m.tag);
    }
    if !m.key.is_empty() {
        line += &format!("  key={}", m.key);
    }
    if let Some(c) = &m.consumer {
        line += &format!("  consumer={c}");
    }
    for (k, v) in &m.headers {
        line += &format!("  {k}={v}");
    }
    if let Some(e) = &m.error {
        line += &format!("  error={e:?}");
    }
    match (&m.body, m.body_encoding.as_deref()) {
        (Some(b), Some("base64")) => line += &format!("  body(base64)={b}"),
        (Some(b), _) => line += &format!("  body={b:?}"),
        (None, _) => line += "  body=(not archived)",
    }
    line
}
