//! The weight arithmetic every router shares, written once: a list of destinations (Gateway API
//! backendRefs, Istio route destinations) set to the split, and a changed list as the smallest
//! guarded replacement.

use serde_json::{Value, json};

use super::Split;

/// `destinations` with the stable one at `100 - weight` and the candidate's at `weight` (added by
/// `new_candidate` when absent, removed when no candidate is active); any other destination as it
/// was. `name` reads a destination's Service or host.
pub fn weigh(
    destinations: &[Value],
    split: &Split,
    stable: &str,
    candidate: &str,
    name: impl Fn(&Value) -> &str,
    new_candidate: impl FnOnce() -> Value,
) -> Vec<Value> {
    let mut out = Vec::with_capacity(destinations.len() + 1);
    let mut has_candidate = false;
    for d in destinations {
        let mut d = d.clone();
        let this = name(&d).to_string();
        if this == stable {
            d["weight"] = json!(100 - split.candidate_weight());
        } else if this == candidate {
            if !split.candidate_active {
                continue;
            }
            d["weight"] = json!(split.weight);
            has_candidate = true;
        }
        out.push(d);
    }
    if split.candidate_active && !has_candidate {
        let mut d = new_candidate();
        d["weight"] = json!(split.weight);
        out.push(d);
    }
    out
}

/// The JSON patch path and value that turn `old` (the list at `list_path`) into `new`: the one
/// item that changed when only one did and none was added or removed (the user's other items are
/// not even rewritten), else the whole list.
pub fn replacement(list_path: &str, old: &[Value], new: Vec<Value>) -> (String, Value) {
    let changed: Vec<usize> = (0..old.len().min(new.len())).filter(|i| old[*i] != new[*i]).collect();
    match changed.as_slice() {
        [i] if old.len() == new.len() => (format!("{list_path}/{i}"), new[*i].clone()),
        _ => (list_path.to_string(), Value::Array(new)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(active: bool, weight: i32) -> Split {
        Split { candidate_active: active, weight, ..Split::none("s", "c", 80) }
    }

    #[test]
    fn weights_sum_to_100_the_candidate_comes_and_goes_and_others_stay() {
        let name = |d: &Value| d["name"].as_str().unwrap_or_default().to_owned();
        let dests = vec![json!({"name": "s", "weight": 100}), json!({"name": "other", "weight": 0})];
        let new = || json!({"name": "c"});
        let on = weigh(&dests, &split(true, 25), "s", "c", |d| d["name"].as_str().unwrap_or_default(), new);
        assert_eq!(on.iter().map(name).collect::<Vec<_>>(), ["s", "other", "c"]);
        assert_eq!(
            (on[0]["weight"].as_i64(), on[1]["weight"].as_i64(), on[2]["weight"].as_i64()),
            (Some(75), Some(0), Some(25))
        );
        let off = weigh(&on, &split(false, 25), "s", "c", |d| d["name"].as_str().unwrap_or_default(), new);
        assert_eq!(off, dests);
    }

    #[test]
    fn one_changed_item_is_replaced_alone_and_a_new_length_replaces_the_list() {
        let old = vec![json!(1), json!(2)];
        assert_eq!(replacement("/spec/rules", &old, vec![json!(1), json!(3)]), ("/spec/rules/1".into(), json!(3)));
        assert_eq!(replacement("/spec/rules", &old, vec![json!(1), json!(2), json!(3)]).0, "/spec/rules");
        assert_eq!(replacement("/spec/rules", &old, vec![json!(0), json!(3)]).0, "/spec/rules");
    }
}
