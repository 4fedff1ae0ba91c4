// A Node.js function for Quarters: `quarters deploy examples/node-hello --name hello-node --tenancy per-tenant`.
//
// Module state and /tmp belong to one tenant's environment: each tenant counts on its own.
let count = 0;

export const handler = async (event, context) => {
  count += 1;
  console.log(`tenant ${context.tenantId} call ${count}`);
  return {
    message: `hello, ${event.name ?? "world"}`,
    tenant: context.tenantId,
    count,
    node: process.version,
  };
};
