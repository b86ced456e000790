//! Strategic merge patch, following apimachinery's `strategicpatch` as the API server runs
//! it (`MergeParallelList` and `IgnoreUnmatchedNulls` both on).
//!
//! Objects merge recursively and `null` deletes a key. Lists tagged `merge` are merged: lists
//! of objects by their merge key (items carrying `$patch: delete` are removed, an item
//! `{"$patch": "replace"}` makes the rest of the patch list replace the list), lists of
//! primitives as a union. Untagged lists are replaced. The directives kubectl's three-way
//! `apply` sends are honoured: `$patch` on an object, `$retainKeys`,
//! `$setElementOrder/<field>` and `$deleteFromPrimitiveList/<field>`.
//!
//! Unlike apimachinery, a value that is copied from the patch because the original has no
//! such field is still merged (into an empty value), so no directive and no `null` ever leaks
//! into the stored object.

use serde_json::{Map, Value};

use super::PatchError;
use super::schema::{self, FieldMeta, Strategy, Ty};

type Object = Map<String, Value>;

const DIRECTIVE_MARKER: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER_PREFIX: &str = "$setElementOrder/";
const DELETE_FROM_PRIMITIVE_LIST_PREFIX: &str = "$deleteFromPrimitiveList/";

/// Applies the strategic merge `patch` to `original`, an object of `kind`.
pub(super) fn apply(kind: &str, original: &Value, patch: &Object) -> Result<Value, PatchError> {
    let original = match original {
        Value::Object(map) => map.clone(),
        _ => Object::new(),
    };
    merge_map(original, patch, schema::root_type(kind), "").map(Value::Object)
}

/// Merges the object `patch` into `original`, of type `ty`, at `path` (for errors).
fn merge_map(original: Object, patch: &Object, ty: Ty, path: &str) -> Result<Object, PatchError> {
    match patch.get(DIRECTIVE_MARKER) {
        None => merge_entries(original, patch, ty, path),
        Some(directive) => match directive.as_str() {
            Some("replace") => merge_entries(Object::new(), patch, ty, path),
            Some("delete") => Ok(Object::new()),
            Some("merge") => merge_entries(original, patch, ty, path),
            _ => Err(bad_directive(path, format!("unknown $patch directive {directive}"))),
        },
    }
}

/// The body of [`merge_map`] once any `$patch` directive on the object has been honoured.
fn merge_entries(mut original: Object, patch: &Object, ty: Ty, path: &str) -> Result<Object, PatchError> {
    apply_retain_keys(&mut original, patch, path)?;

    // Lists with an element order are merged and ordered first; the main loop skips them.
    let mut ordered: Vec<&str> = Vec::new();
    for (key, order) in patch {
        if let Some(field) = key.strip_prefix(SET_ELEMENT_ORDER_PREFIX)
            && apply_element_order(&mut original, patch, field, order, ty, path)?
        {
            ordered.push(field);
        }
    }

    for (key, patch_value) in patch {
        if key == DIRECTIVE_MARKER
            || key == RETAIN_KEYS
            || key.starts_with(SET_ELEMENT_ORDER_PREFIX)
            || ordered.contains(&key.as_str())
        {
            continue;
        }
        if let Some(field) = key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST_PREFIX) {
            delete_from_primitive_list(&mut original, field, patch_value, path)?;
            continue;
        }
        if key.starts_with('$') {
            return Err(bad_directive(path, format!("unknown directive {key:?}")));
        }
        if patch_value.is_null() {
            original.shift_remove(key);
            continue;
        }
        let meta = schema::field(ty, key);
        let child = child_path(path, key);
        // `get_mut` + `insert` keeps the key where it was in the original.
        let current = original.get_mut(key).map(Value::take);
        let merged = merge_value(current, patch_value, meta, &child)?;
        original.insert(key.clone(), merged);
    }
    Ok(original)
}

/// Merges one field's patch value into its current value (absent when `None`).
fn merge_value(current: Option<Value>, patch: &Value, meta: FieldMeta, path: &str) -> Result<Value, PatchError> {
    match (current, patch) {
        (Some(Value::Object(current)), Value::Object(patch)) => {
            merge_map(current, patch, meta.ty, path).map(Value::Object)
        }
        (Some(Value::Array(current)), Value::Array(patch)) => {
            merge_list_field(current, patch, meta, path).map(Value::Array)
        }
        // Absent or of another JSON type: the patch value wins, cleaned of directives.
        (_, Value::Object(patch)) => merge_map(Object::new(), patch, meta.ty, path).map(Value::Object),
        (_, Value::Array(patch)) => merge_list_field(Vec::new(), patch, meta, path).map(Value::Array),
        (_, scalar) => Ok(scalar.clone()),
    }
}

/// Merges a list field by its strategy: merged when tagged `merge`, replaced otherwise.
fn merge_list_field(
    current: Vec<Value>,
    patch: &[Value],
    meta: FieldMeta,
    path: &str,
) -> Result<Vec<Value>, PatchError> {
    match meta.strategy {
        Strategy::Merge { key } => merge_list(current, patch, key, meta.ty, path),
        Strategy::Default => replace_list(patch, meta.ty, path),
    }
}

/// The patch list as the new value, with directives and `null`s stripped from its items.
fn replace_list(patch: &[Value], item_ty: Ty, path: &str) -> Result<Vec<Value>, PatchError> {
    patch
        .iter()
        .map(|item| match item {
            Value::Object(item) => merge_map(Object::new(), item, item_ty, path).map(Value::Object),
            other => Ok(other.clone()),
        })
        .collect()
}

/// Merges a list tagged `merge`: lists of objects by `merge_key`, primitives as a union.
/// Patch items come first in patch order, interleaved with the server-only items by their
/// position in the live list (apimachinery's `normalizeElementOrder`).
fn merge_list(
    current: Vec<Value>,
    patch: &[Value],
    merge_key: Option<&'static str>,
    item_ty: Ty,
    path: &str,
) -> Result<Vec<Value>, PatchError> {
    if current.is_empty() && patch.is_empty() {
        return Ok(current);
    }
    if current.iter().chain(patch).any(Value::is_array) {
        return Err(unmergeable(path, "lists of lists cannot be merged"));
    }
    let objects = patch.iter().filter(|v| v.is_object()).count();
    if objects == 0 && !current.iter().any(Value::is_object) {
        let server_order = current.clone();
        let mut merged: Vec<Value> = Vec::with_capacity(current.len() + patch.len());
        for item in current.into_iter().chain(patch.iter().cloned()) {
            if !merged.contains(&item) {
                merged.push(item);
            }
        }
        return Ok(normalize_order(merged, patch, &server_order, None));
    }
    if objects != patch.len() {
        return Err(unmergeable(path, "list mixes objects and primitives"));
    }
    let Some(key) = merge_key else {
        return Err(unmergeable(path, "cannot merge a list of objects without a merge key"));
    };

    // Special items first: deletions by key, and `$patch: replace` for the whole list.
    let mut merged = current;
    let mut items: Vec<&Object> = Vec::with_capacity(patch.len());
    let mut replace = false;
    for item in patch.iter().filter_map(Value::as_object) {
        match item.get(DIRECTIVE_MARKER).map(|d| (d, d.as_str())) {
            None | Some((_, Some("merge"))) => items.push(item),
            Some((_, Some("delete"))) => {
                let value = merge_key_of(item, key, path)?;
                merged.retain(|live| live.get(key) != Some(value));
            }
            Some((_, Some("replace"))) => replace = true,
            Some((directive, _)) => {
                return Err(bad_directive(path, format!("unknown $patch directive {directive}")));
            }
        }
    }
    if replace {
        let items: Vec<Value> = items.into_iter().map(|item| Value::Object(item.clone())).collect();
        return replace_list(&items, item_ty, path);
    }

    let server_order = merged.iter().map(|live| identity(live, Some(key)).clone()).collect::<Vec<_>>();
    let mut patch_order = Vec::with_capacity(items.len());
    for item in items {
        let value = merge_key_of(item, key, path)?;
        patch_order.push(value.clone());
        let child = format!("{path}[{key}={value}]");
        match merged.iter().position(|live| live.get(key) == Some(value)) {
            Some(pos) => {
                let live = match merged[pos].take() {
                    Value::Object(live) => live,
                    _ => Object::new(),
                };
                merged[pos] = Value::Object(merge_map(live, item, item_ty, &child)?);
            }
            None => merged.push(Value::Object(merge_map(Object::new(), item, item_ty, &child)?)),
        }
    }
    Ok(normalize_order(merged, &patch_order, &server_order, Some(key)))
}

/// The value of the merge key of a patch list item.
fn merge_key_of<'a>(item: &'a Object, key: &'static str, path: &str) -> Result<&'a Value, PatchError> {
    item.get(key).ok_or_else(|| PatchError::MissingMergeKey {
        path: path.to_owned(),
        key,
        item: Value::Object(item.clone()).to_string(),
    })
}

/// `$retainKeys`: drop every key of the original the list does not name. Every key the
/// patch sets must be named too.
fn apply_retain_keys(original: &mut Object, patch: &Object, path: &str) -> Result<(), PatchError> {
    let Some(retain) = patch.get(RETAIN_KEYS) else {
        return Ok(());
    };
    let keys = retain
        .as_array()
        .and_then(|list| list.iter().map(Value::as_str).collect::<Option<Vec<&str>>>())
        .ok_or_else(|| bad_directive(path, "$retainKeys must be a list of strings".to_owned()))?;
    if let Some((missing, _)) =
        patch.iter().find(|(k, v)| !v.is_null() && !k.starts_with('$') && !keys.contains(&k.as_str()))
    {
        return Err(unmergeable(path, &format!("patch sets {missing:?}, which $retainKeys does not list")));
    }
    original.retain(|k, _| keys.contains(&k.as_str()));
    Ok(())
}

/// `$setElementOrder/<field>`: merges `field` and orders it by `order`, then the live-only
/// items by their live position. Returns whether the field is done (the main loop skips it).
fn apply_element_order(
    original: &mut Object,
    patch: &Object,
    field: &str,
    order: &Value,
    ty: Ty,
    path: &str,
) -> Result<bool, PatchError> {
    let child = child_path(path, field);
    let Value::Array(order) = order else {
        return Err(bad_directive(&child, "$setElementOrder must be a list".to_owned()));
    };
    let meta = schema::field(ty, field);
    let key = match meta.strategy {
        Strategy::Merge { key } => key,
        Strategy::Default => None,
    };
    let patch_list = match patch.get(field) {
        None => None,
        Some(Value::Array(list)) => Some(list),
        // Deleting or replacing the field: there is nothing to order.
        Some(_) => return Ok(false),
    };
    let order_ids: Vec<Value> = order.iter().map(|item| identity(item, key).clone()).collect();
    for item in patch_list.into_iter().flatten() {
        let is_directive = item.get(DIRECTIVE_MARKER).is_some();
        if !is_directive && !order_ids.contains(identity(item, key)) {
            return Err(bad_directive(&child, format!("{item} is missing from $setElementOrder")));
        }
    }
    let live = match original.get_mut(field) {
        Some(Value::Array(live)) => Some(std::mem::take(live)),
        _ => None,
    };
    let server_order: Vec<Value> = live.iter().flatten().map(|item| identity(item, key).clone()).collect();
    let merged = match (live, patch_list) {
        (Some(live), None) => live,
        (live, Some(patch_list)) => merge_list_field(live.unwrap_or_default(), patch_list, meta, &child)?,
        (None, None) => return Ok(true),
    };
    let ordered = normalize_order(merged, &order_ids, &server_order, key);
    original.insert(field.to_owned(), Value::Array(ordered));
    Ok(true)
}

/// `$deleteFromPrimitiveList/<field>`: removes the listed values from a primitive list.
fn delete_from_primitive_list(
    original: &mut Object,
    field: &str,
    values: &Value,
    path: &str,
) -> Result<(), PatchError> {
    let Value::Array(values) = values else {
        return Err(bad_directive(&child_path(path, field), "$deleteFromPrimitiveList must be a list".to_owned()));
    };
    if let Some(Value::Array(list)) = original.get_mut(field) {
        list.retain(|item| !values.contains(item));
    }
    Ok(())
}

/// What identifies a list item: its merge key's value, or the item itself for primitives.
fn identity<'a>(item: &'a Value, key: Option<&str>) -> &'a Value {
    static MISSING: Value = Value::Null;
    match key {
        Some(key) => item.get(key).unwrap_or(&MISSING),
        None => item,
    }
}

/// Orders a merged list: items named in `patch_order` in that order, the others in
/// `server_order`, the two interleaved so that each server-only item stays in front of the
/// first patch item that followed it in the live list (apimachinery's `mergeSortedSlice`).
fn normalize_order(merged: Vec<Value>, patch_order: &[Value], server_order: &[Value], key: Option<&str>) -> Vec<Value> {
    let position = |order: &[Value], item: &Value| {
        let id = identity(item, key);
        order.iter().position(|o| o == id)
    };
    let (mut patch_items, mut server_items): (Vec<Value>, Vec<Value>) =
        merged.into_iter().partition(|item| position(patch_order, item).is_some());
    patch_items.sort_by_key(|item| position(patch_order, item).unwrap_or(usize::MAX));
    server_items.sort_by_key(|item| position(server_order, item).unwrap_or(usize::MAX));

    let mut result = Vec::with_capacity(patch_items.len() + server_items.len());
    let mut server = server_items.into_iter().peekable();
    let mut patched = patch_items.into_iter().peekable();
    loop {
        let take_server = match (server.peek(), patched.peek()) {
            (Some(s), Some(p)) => matches!(
                (position(server_order, s), position(server_order, p)),
                (Some(si), Some(pi)) if si < pi
            ),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        let next = if take_server { server.next() } else { patched.next() };
        result.extend(next);
    }
    result
}

fn child_path(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") }
}

fn bad_directive(path: &str, message: String) -> PatchError {
    PatchError::BadDirective { path: path.to_owned(), message }
}

fn unmergeable(path: &str, message: &str) -> PatchError {
    PatchError::Unmergeable { path: path.to_owned(), message: message.to_owned() }
}
