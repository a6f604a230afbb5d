-- Argo CD health check for modelrollout.dev/ModelRollout.
-- Install: resource.customizations.health.modelrollout.dev_ModelRollout in argocd-cm (see the README).
local hs = {}
local generation = 0
if obj.metadata ~= nil and obj.metadata.generation ~= nil then
  generation = obj.metadata.generation
end
local st = obj.status
if st == nil or st.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the modelrollout controller"
  return hs
end
if st.observedGeneration == nil or st.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the controller to observe the latest spec"
  return hs
end
local detail = st.message or st.reason or ""
local phase = st.phase
if phase == "Idle" or phase == "Promoted" then
  hs.status = "Healthy"
elseif phase == "Progressing" then
  hs.status = "Progressing"
elseif phase == "Paused" then
  hs.status = "Suspended"
elseif phase == "RolledBack" or phase == "Failed" then
  hs.status = "Degraded"
else
  hs.status = "Unknown"
end
hs.message = phase
if detail ~= "" then
  hs.message = phase .. ": " .. detail
end
return hs
