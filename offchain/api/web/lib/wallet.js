// The connected wallet (any EIP-1193 provider: MetaMask, a hardware wallet bridge, the tests'
// injected provider) and the campaign's contracts through viem.
//
//   const config = await loadConfig();          // chain id, pool, token, campaign (GET /web/config)
//   const wallet = await connect(config);       // asks the wallet for an account; checks the network
//   await writePool(wallet, "claimRounds", [campaignId, account, leaves]);
//   describeError(error)                        // one readable sentence for any failure
//
// Every read and write goes through the wallet's own provider: the page never needs the node's
// RPC URL (which may hold an API key) and works offline against a local chain.
import {
  BaseError,
  ContractFunctionRevertedError,
  createPublicClient,
  createWalletClient,
  custom,
  defineChain,
  getAddress,
  UserRejectedRequestError,
} from "viem";
import poolAbi from "../abi/CompensationPool.json";
import erc20Abi from "../abi/ERC20.json";
import { getJson } from "./api.js";

export { erc20Abi, poolAbi };

const POLL_MS = 250;

/** A problem a person must act on (no wallet, wrong network, a refused connection). */
export class WalletError extends Error {
  constructor(message, code) {
    super(message);
    this.name = "WalletError";
    this.code = code;
  }
}

/** GET /web/config: `{chain_id, pool, token, campaign_id, ...}` of the node's deployment
 * (addresses checksummed); `null` when the node has no deployment yet. */
export async function loadConfig() {
  return getJson("/web/config");
}

function chainOf(config) {
  return defineChain({
    id: config.chain_id,
    name: config.chain_name || `chain ${config.chain_id}`,
    nativeCurrency: { name: "Ether", symbol: "ETH", decimals: 18 },
    rpcUrls: { default: { http: [] } },
  });
}

/** The wallet's chain id (a number). */
export async function walletChainId() {
  return Number.parseInt(await window.ethereum.request({ method: "eth_chainId" }), 16);
}

/** Connect: the wallet's first account and viem clients over the wallet's provider.
 * Returns `{account, chainId, config, publicClient, walletClient}`.
 * Throws WalletError: no wallet ("no-wallet"), connection refused ("rejected"), wrong network
 * ("wrong-network": the message names both chains; see switchNetwork). */
export async function connect(config) {
  if (!window.ethereum) {
    throw new WalletError("No wallet found in this browser. Install an Ethereum wallet " +
      "(e.g. MetaMask) or open this page in a browser that has one.", "no-wallet");
  }
  let accounts;
  try {
    accounts = await window.ethereum.request({ method: "eth_requestAccounts" });
  } catch (error) {
    if (error?.code === 4001) throw new WalletError("You declined to connect your wallet.", "rejected");
    throw error;
  }
  if (!accounts?.length) throw new WalletError("Your wallet shared no account with this page.", "no-account");
  const account = getAddress(accounts[0]);
  const chain = chainOf(config);
  const transport = custom(window.ethereum);
  const wallet = {
    account,
    config,
    chainId: await walletChainId(),
    publicClient: createPublicClient({ chain, transport, pollingInterval: POLL_MS }),
    walletClient: createWalletClient({ account, chain, transport, pollingInterval: POLL_MS }),
  };
  checkNetwork(wallet);
  return wallet;
}

/** Throw WalletError("wrong-network") unless the wallet is on the campaign's chain. */
export function checkNetwork(wallet) {
  const want = wallet.config.chain_id;
  if (wallet.chainId !== want) {
    throw new WalletError(`Wrong network: your wallet is on chain ${wallet.chainId}, but this ` +
      `campaign is on chain ${want}. Switch your wallet to chain ${want} and try again.`, "wrong-network");
  }
}

/** Ask the wallet to switch to the campaign's chain (EIP-3326); throws what the wallet throws. */
export async function switchNetwork(config) {
  await window.ethereum.request({
    method: "wallet_switchEthereumChain",
    params: [{ chainId: `0x${config.chain_id.toString(16)}` }],
  });
}

/** Read a view function of the pool: `readPool(wallet, "getCampaign", [id])`. */
export function readPool(wallet, functionName, args = []) {
  return wallet.publicClient.readContract({ address: wallet.config.pool, abi: poolAbi, functionName, args });
}

/** Read a view function of an ERC-20 token (`token` defaults to the campaign's). */
export function readToken(wallet, functionName, args = [], token = wallet.config.token) {
  return wallet.publicClient.readContract({ address: token, abi: erc20Abi, functionName, args });
}

async function write(wallet, address, abi, functionName, args, value) {
  checkNetwork({ ...wallet, chainId: await walletChainId() });
  // Simulate first: a revert is decoded (custom error name and arguments) before the wallet
  // is asked to sign anything.
  const { request } = await wallet.publicClient.simulateContract({
    address, abi, functionName, args, account: wallet.account, value,
  });
  const hash = await wallet.walletClient.writeContract(request);
  const receipt = await wallet.publicClient.waitForTransactionReceipt({ hash });
  if (receipt.status !== "success") {
    throw new WalletError(`Transaction ${hash} was mined but reverted.`, "reverted");
  }
  return receipt;
}

/** Send a pool transaction and wait for its receipt (simulated first; see describeError). */
export function writePool(wallet, functionName, args = [], { value } = {}) {
  return write(wallet, wallet.config.pool, poolAbi, functionName, args, value);
}

/** Send an ERC-20 transaction (e.g. "approve") and wait for its receipt. */
export function writeToken(wallet, functionName, args = [], token = wallet.config.token) {
  return write(wallet, token, erc20Abi, functionName, args, undefined);
}

function formatValue(value) {
  if (typeof value === "bigint") return value.toString();
  if (Array.isArray(value)) return `[${value.map(formatValue).join(", ")}]`;
  return String(value);
}

/** A decoded custom error as "Name(arg: value, ...)" with the ABI's argument names. */
export function formatRevert(data) {
  const names = (data.abiItem?.inputs || []).map((input) => input.name);
  const args = (data.args || []).map((value, i) => (names[i] ? `${names[i]}: ` : "") + formatValue(value));
  return `${data.errorName}(${args.join(", ")})`;
}

/** One sentence for any error of a wallet flow: a rejected request, a decoded contract revert
 * ("The contract refused: AlreadyClaimed(campaignId: 1, roundId: 1, index: 2)"), a wrong
 * network, the node down, or the underlying message. */
export function describeError(error) {
  if (error?.code === 4001 || (error instanceof BaseError && error.walk((e) => e instanceof UserRejectedRequestError || e?.code === 4001))) {
    return "You rejected the request in your wallet: nothing was signed or sent.";
  }
  if (error instanceof BaseError) {
    const revert = error.walk((e) => e instanceof ContractFunctionRevertedError);
    if (revert?.data?.errorName) return `The contract refused: ${formatRevert(revert.data)}.`;
    if (revert) return `The contract refused: ${revert.reason || revert.shortMessage}.`;
    return error.shortMessage || error.message;
  }
  return String(error?.message ?? error);
}
