//! The access trail (append-only; the engines refuse updates and deletes of it).

use super::{Cols, Db, DbResult, DbRow, Sql};

/// One recorded access.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct AccessRecord {
    /// Its number in the trail (assigned when stored; 0 before).
    pub id: u64,
    /// When the answer was given, Unix ms.
    pub at: u64,
    /// The caller's token id.
    pub token_id: String,
    /// The caller's token name.
    pub token_name: String,
    /// The caller's role.
    pub role: String,
    /// HTTP method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Query string (it may name a patient).
    pub query: String,
    /// The patient pseudonym the request named (query `patient=` or the path), if any.
    pub patient: Option<String>,
    /// The answer's status.
    pub status: u16,
    /// The client's address.
    pub remote: String,
}

/// Rows per INSERT statement (11 parameters each).
const ROWS_PER_INSERT: usize = 64;

const COLUMNS: &str =
    "id, at, token_id, token_name, role, method, path, query, patient, status, remote";

fn record_of(r: &DbRow) -> DbResult<AccessRecord> {
    let c = Cols::new(r, "access_log");
    let id = c.u64(0)?;
    let c = c.keyed(id);
    Ok(AccessRecord {
        id,
        at: c.u64(1)?,
        token_id: c.text(2)?,
        token_name: c.text(3)?,
        role: c.text(4)?,
        method: c.text(5)?,
        path: c.text(6)?,
        query: c.text(7)?,
        patient: c.opt_text(8)?,
        status: c.int(9)?,
        remote: c.text(10)?,
    })
}

/// Which records a page holds.
#[derive(Debug, Clone, Default)]
pub struct AccessFilter {
    /// From (inclusive), ms.
    pub from: u64,
    /// To (exclusive), ms.
    pub to: u64,
    /// Only this patient's.
    pub patient: Option<String>,
    /// Only this token's.
    pub token_id: Option<String>,
    /// After this record id.
    pub after: Option<u64>,
}

impl Db {
    /// Appends records, in one transaction (multi-row statements).
    pub(crate) async fn insert_access(&self, records: &[AccessRecord]) -> DbResult<()> {
        let stmts = records
            .chunks(ROWS_PER_INSERT)
            .map(|chunk| {
                let mut text = String::from(
                    "INSERT INTO access_log (at, token_id, token_name, role, method, path, query, patient, status, remote) VALUES ",
                );
                for i in 0..chunk.len() {
                    let b = i * 10;
                    if i > 0 {
                        text.push_str(", ");
                    }
                    text.push('(');
                    text.push_str(
                        &(1..=10).map(|k| format!("${}", b + k)).collect::<Vec<_>>().join(", "),
                    );
                    text.push(')');
                }
                let mut s = Sql::new(text);
                for r in chunk {
                    s = s
                        .u64(r.at)
                        .text(&r.token_id)
                        .text(&r.token_name)
                        .text(&r.role)
                        .text(&r.method)
                        .text(&r.path)
                        .text(&r.query)
                        .opt_text(r.patient.as_deref())
                        .i32(Some(i32::from(r.status)))
                        .text(&r.remote);
                }
                s
            })
            .collect();
        self.exec_all(stmts).await.map(drop)
    }

    /// A page of the trail in id order, at most `limit`.
    pub(crate) async fn access_page(
        &self,
        f: &AccessFilter,
        limit: u32,
    ) -> DbResult<Vec<AccessRecord>> {
        let mut text =
            format!("SELECT {COLUMNS} FROM access_log WHERE at >= $1 AND at < $2 AND id > $3");
        let mut n = 3;
        if f.patient.is_some() {
            n += 1;
            text.push_str(&format!(" AND patient = ${n}"));
        }
        if f.token_id.is_some() {
            n += 1;
            text.push_str(&format!(" AND token_id = ${n}"));
        }
        text.push_str(&format!(" ORDER BY id LIMIT ${}", n + 1));
        let mut s = Sql::new(text)
            .u64(f.from)
            .u64(f.to)
            .u64(f.after.unwrap_or(0));
        if let Some(p) = &f.patient {
            s = s.text(p);
        }
        if let Some(t) = &f.token_id {
            s = s.text(t);
        }
        self.decode_all(s.u64(u64::from(limit)), record_of).await
    }
}
