//! How the editor changes parameters. In a host this must go through nice-plug's
//! `GuiContext` (so the host records automation and undo); in tests a fake records the
//! changes instead. Both sit behind [`ParamAccess`] so [`super::draw`] does not care.

use nice_plug::context::gui::GuiContext;
use nice_plug::prelude::ParamPtr;
use std::sync::{Arc, Mutex};

/// A parameter change gesture: `begin`, one or more `set`s, `end` (hosts group a drag into
/// one undo step and one automation pass this way).
pub trait ParamAccess: Send {
    fn begin(&mut self, param: ParamPtr);
    fn set(&mut self, param: ParamPtr, normalized: f32);
    fn end(&mut self, param: ParamPtr);

    /// A complete gesture for a click (button, checkbox, menu entry).
    fn set_once(&mut self, param: ParamPtr, normalized: f32) {
        self.begin(param);
        self.set(param, normalized);
        self.end(param);
    }
}

// SAFETY (all three): the editor only passes pointers of the plugin's own parameters, which
// live as long as the plugin and therefore as long as its GUI context.
impl ParamAccess for GuiContext {
    fn begin(&mut self, param: ParamPtr) {
        unsafe { self.raw_begin_set_parameter(param) }
    }
    fn set(&mut self, param: ParamPtr, normalized: f32) {
        unsafe { self.raw_set_parameter_normalized(param, normalized) }
    }
    fn end(&mut self, param: ParamPtr) {
        unsafe { self.raw_end_set_parameter(param) }
    }
}

/// Before the host hands the editor its context: changes go nowhere.
pub struct NoAccess;

impl ParamAccess for NoAccess {
    fn begin(&mut self, _: ParamPtr) {}
    fn set(&mut self, _: ParamPtr, _: f32) {}
    fn end(&mut self, _: ParamPtr) {}
}

/// One recorded `set`: the parameter's display name and the new normalized value.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamChange {
    pub name: String,
    pub normalized: f32,
}

/// A stand-in for the host in tests: applies every change to the parameter directly (as the
/// plugin wrapper would) and records it. Clones share the record.
#[derive(Clone, Default)]
pub struct RecordingAccess {
    pub changes: Arc<Mutex<Vec<ParamChange>>>,
}

impl RecordingAccess {
    /// The recorded changes so far, oldest first.
    pub fn changes(&self) -> Vec<ParamChange> {
        self.changes.lock().expect("not poisoned").clone()
    }
}

impl ParamAccess for RecordingAccess {
    fn begin(&mut self, _: ParamPtr) {}
    fn set(&mut self, param: ParamPtr, normalized: f32) {
        // SAFETY: as above, the pointer comes from a live `MelodistParams`.
        let name = unsafe {
            param._internal_set_normalized_value(normalized);
            param.name().to_string()
        };
        let change = ParamChange { name, normalized };
        self.changes.lock().expect("not poisoned").push(change);
    }
    fn end(&mut self, _: ParamPtr) {}
}
