// A real OpenID Provider for the e2e tests: panva's oidc-provider on 127.0.0.1, configured
// from the JSON file named by the first argument:
//   {"issuer": "http://127.0.0.1:PORT/", "port": PORT, "keys": [private JWKs with kid, alg],
//    "client_id": "...", "client_secret": "...", "audience": "..."}
// One confidential client may use the client_credentials grant. Resource indicators are on
// and every resource gets JWT access tokens (RFC 9068), signed with the alg named by the
// resource's last path segment (`https://ams.example/rest/PS256`), so a test picks the key.
// Prints "listening" on stdout once the port accepts requests.
import { readFileSync } from 'node:fs';
import Provider from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const algs = config.keys.map((key) => key.alg);

const provider = new Provider(config.issuer, {
  clients: [{
    client_id: config.client_id,
    client_secret: config.client_secret,
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
    token_endpoint_auth_method: 'client_secret_post',
  }],
  jwks: { keys: config.keys },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => undefined,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resource) => {
        const alg = new URL(resource).pathname.split('/').pop();
        if (!algs.includes(alg)) {
          throw new Error(`no key for ${alg}`);
        }
        return {
          scope: 'publish play',
          audience: config.audience,
          accessTokenTTL: 600,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg } },
        };
      },
    },
  },
  enabledJWA: {
    // Every alg the tests' keys use may sign ID and access tokens.
    idTokenSigningAlgValues: algs,
  },
});
provider.on('server_error', (ctx, error) => console.error('server_error', error));

provider.listen(config.port, '127.0.0.1', () => {
  console.log('listening');
});
