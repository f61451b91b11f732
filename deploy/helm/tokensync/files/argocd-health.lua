-- Argo CD health check for tokensync.dev/ProviderToken: Healthy/Degraded from Ready.
hs = {}
if obj.status ~= nil and obj.status.conditions ~= nil then
  for _, condition in ipairs(obj.status.conditions) do
    if condition.type == "Ready" then
      if obj.metadata.generation ~= nil and obj.status.observedGeneration ~= nil
          and obj.status.observedGeneration < obj.metadata.generation then
        hs.status = "Progressing"
        hs.message = "Minting for the new spec"
        return hs
      end
      if condition.status == "True" then
        hs.status = "Healthy"
      else
        hs.status = "Degraded"
      end
      hs.message = (condition.reason or "") .. ": " .. (condition.message or "")
      return hs
    end
  end
end
hs.status = "Progressing"
hs.message = "Waiting for the first token"
return hs
