//! Virtual switches: Linux bridges, optionally on an uplink NIC and VLAN.

use crate::errors;
use crate::model::{kind, VmRecord, VswitchRecord};
use crate::Inner;
use nasvisor_api_types::VswitchCreate;
use nasvisor_api_types::{CoreError, VswitchView};
use nasvisor_best_effort::BestEffort;
use nasvisor_net::{BridgeName, IfName, NetError, Vswitch, VswitchSpec};

fn view(s: &VswitchRecord) -> VswitchView {
    VswitchView {
        name: s.name.clone(),
        uplink: s.uplink.clone(),
        vlan: s.vlan,
    }
}

fn spec_of(s: &VswitchRecord) -> Result<VswitchSpec, NetError> {
    let spec = VswitchSpec::new(BridgeName::from_short(&s.name)?);
    match &s.uplink {
        Some(u) => spec.with_uplink(IfName::parse("uplink", u)?, s.vlan),
        None => match s.vlan {
            Some(v) => Err(NetError::Invalid {
                field: "vlan",
                value: v.to_string(),
                reason: "a VLAN needs an uplink NIC".into(),
            }),
            None => Ok(spec),
        },
    }
}

impl Inner {
    /// Makes the vswitch's bridge exist as recorded; returns its name.
    pub(crate) fn ensure_vswitch(&self, s: &VswitchRecord) -> Result<BridgeName, NetError> {
        let spec = spec_of(s)?;
        Vswitch::ensure(&self.net, &spec)?;
        Ok(spec.name().clone())
    }

    pub(crate) fn list_vswitches(&self) -> Vec<VswitchView> {
        self.db
            .list::<VswitchRecord>(kind::VSWITCH)
            .iter()
            .map(view)
            .collect()
    }

    pub(crate) async fn create_vswitch(
        &self,
        req: VswitchCreate,
    ) -> Result<VswitchView, CoreError> {
        let _g = self.ops.lock().await;
        if self
            .db
            .get::<VswitchRecord>(kind::VSWITCH, &req.name)
            .is_some()
        {
            return Err(errors::conflict(format!(
                "vswitch {} already exists",
                req.name
            )));
        }
        let rec = VswitchRecord {
            name: req.name.clone(),
            uplink: req.uplink.clone(),
            vlan: req.vlan,
        };
        let field = |e: &NetError| -> &'static str {
            match e {
                NetError::Invalid { field, .. } if *field == "uplink" || *field == "vlan" => field,
                _ => "name",
            }
        };
        let spec = spec_of(&rec).map_err(|e| errors::invalid(field(&e), e.to_string()))?;
        if let Some(u) = &rec.uplink {
            if self.net.link(u).map_err(errors::internal)?.is_none() {
                return Err(errors::invalid(
                    "uplink",
                    format!("no network interface {u:?} on host {}", self.host.id),
                ));
            }
        }
        Vswitch::ensure(&self.net, &spec).map_err(|e| match &e {
            NetError::Invalid { .. } => errors::invalid(field(&e), e.to_string()),
            _ => errors::internal(format!("creating the bridge: {e}")),
        })?;
        if let Err(e) = self
            .db
            .create(
                kind::VSWITCH,
                &rec.name,
                &rec,
                &format!("vswitch {}", rec.name),
            )
            .await
        {
            Vswitch::delete(&self.net, spec.name(), false)
                .best_effort("remove the bridge of a vswitch that could not be recorded");
            return Err(e);
        }
        Ok(view(&rec))
    }

    pub(crate) async fn delete_vswitch(&self, name: &str) -> Result<(), CoreError> {
        let _g = self.ops.lock().await;
        let Some((rec, _)) = self.db.get::<VswitchRecord>(kind::VSWITCH, name) else {
            return Err(errors::not_found(format!("vswitch {name}")));
        };
        let users: Vec<String> = self
            .db
            .list::<VmRecord>(kind::VM)
            .into_iter()
            .filter(|v| v.nics.iter().any(|n| n.vswitch == name))
            .map(|v| v.name)
            .collect();
        if !users.is_empty() {
            return Err(errors::conflict(format!(
                "vswitch {name} is used by VM(s) {}",
                users.join(", ")
            )));
        }
        let spec = spec_of(&rec).map_err(errors::internal)?;
        Vswitch::delete(&self.net, spec.name(), false)
            .map_err(|e| errors::conflict(format!("removing the bridge: {e}")))?;
        self.db.delete(kind::VSWITCH, name).await?;
        Ok(())
    }
}
