//! One write per alert per batch.

use crate::db::SideRow;
use std::collections::HashMap;

/// One write per alert per batch: an alert touched by several readings of the batch is written
/// once, with its final state, where it first appeared (before its transitions, which refer to
/// it).
pub(super) fn coalesce_alert_rows(side: &mut Vec<SideRow>) {
    let mut first: HashMap<String, usize> = HashMap::new();
    let mut later = Vec::new();
    for i in 0..side.len() {
        if let SideRow::Alert(a) = &side[i] {
            match first.get(&a.id) {
                Some(&j) => {
                    side.swap(i, j); // the final state moves to the first slot…
                    later.push(i); // …and the earlier one, now here, goes
                }
                None => {
                    first.insert(a.id.clone(), i);
                }
            }
        }
    }
    if later.is_empty() {
        return;
    }
    let mut i = 0;
    side.retain(|_| {
        let keep = later.binary_search(&i).is_err();
        i += 1;
        keep
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::{Alert, Status};

    fn alert(id: &str, value: f64) -> SideRow {
        SideRow::Alert(Alert {
            id: id.into(),
            patient: "p".into(),
            parameter: "8867-4".into(),
            status: Status::Open,
            severity: 2,
            value,
            reading_index: 0,
            opened_at: 0,
            updated_at: 0,
            last_abnormal_at: 0,
            events: 1,
        })
    }

    fn event(id: &str) -> SideRow {
        SideRow::AlertEvent {
            alert_id: id.into(),
            seq: 1,
            at: 0,
            transition: "opened",
            actor: "system".into(),
            severity: 2,
            reading_index: None,
        }
    }

    #[test]
    fn alert_rows_coalesce_to_the_final_state_at_the_first_place() {
        let mut side = vec![
            alert("a", 1.0),
            event("a"),
            alert("b", 5.0),
            alert("a", 2.0),
            alert("a", 3.0),
            alert("b", 6.0),
        ];
        coalesce_alert_rows(&mut side);
        let shape: Vec<String> = side
            .iter()
            .map(|r| match r {
                SideRow::Alert(a) => format!("{}={}", a.id, a.value),
                SideRow::AlertEvent { alert_id, .. } => format!("event {alert_id}"),
                _ => "other".into(),
            })
            .collect();
        assert_eq!(shape, ["a=3", "event a", "b=6"]);
    }
}
