// The holder page (/holder): connect a wallet, see every round it took part in
// (GET /holders/{address}/overview, one request), claim all unclaimed payments of a campaign in
// one claimRounds transaction, sign an EIP-712 ClaimRecipient authorisation that pays another
// address, send someone's authorisation (claimRoundsTo), and register works (EIP-191).
import { getAddress, isAddress, parseUnits } from "viem";
import { ApiError, getJson, NodeDownError, postForm } from "./lib/api.js";
import { buildRegistration, checkFiles } from "./lib/registration.js";
import { busy, el, formatTokens, showMessage } from "./lib/ui.js";
import {
  connect, describeError, loadConfig, readPool, switchNetwork, WalletError, writePool,
} from "./lib/wallet.js";

const DOMAIN_NAME = "CompensationPool";
const DOMAIN_VERSION = "2";
const RECIPIENT_TYPES = {
  ClaimRecipient: [
    { name: "campaignId", type: "uint256" },
    { name: "account", type: "address" },
    { name: "recipient", type: "address" },
    { name: "nonce", type: "uint256" },
    { name: "deadline", type: "uint256" },
  ],
};

const state = { config: null, wallet: null, overview: null, lastIssuedAt: 0 };
const $ = (id) => document.getElementById(id);

/** One sentence for any failure of this page. */
function describe(error) {
  if (error instanceof ApiError || error instanceof NodeDownError || error instanceof WalletError) {
    return error.message;
  }
  return describeError(error);
}

function requireWallet() {
  if (!state.wallet) {
    throw new WalletError("Connect your wallet first (the “Connect wallet” button above).", "not-connected");
  }
  return state.wallet;
}

async function config() {
  if (!state.config) {
    try {
      state.config = await loadConfig();
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) {
        throw new WalletError("This node has no deployment yet: there is no campaign to claim from.", "no-deployment");
      }
      throw error;
    }
  }
  return state.config;
}

// -- connecting ------------------------------------------------------------------------------

async function connectWallet() {
  const switchButton = $("switch-network");
  try {
    state.wallet = await connect(await config());
  } catch (error) {
    state.wallet = null;
    switchButton.hidden = !(error instanceof WalletError && error.code === "wrong-network");
    throw error;
  }
  switchButton.hidden = true;
  $("account").textContent = `Connected: ${state.wallet.account}`;
  $("connect").textContent = "Reload my rounds";
  await refresh();
}

async function onSwitch() {
  await switchNetwork(await config());
  await connectWallet();
  showMessage("Your wallet is on the campaign's network now.", "success");
}

// -- the rounds table ------------------------------------------------------------------------

/** The overview of the connected account, with every leaf's claim flag read from the chain
 * through the wallet (the node's view of the claims may be a few seconds old, or miss a
 * reorganisation). */
async function refresh() {
  const wallet = requireWallet();
  const overview = await getJson(`/holders/${wallet.account}/overview`);
  for (const campaign of overview.campaigns) {
    if (campaign.campaign_id === null || campaign.pool !== wallet.config.pool) continue;
    const paid = campaign.rounds.filter((r) => r.leaf);
    const flags = await Promise.all(paid.map((r) => readPool(wallet, "isClaimed",
      [BigInt(campaign.campaign_id), BigInt(r.round_id), BigInt(r.index)])));
    paid.forEach((r, i) => { r.claimed = flags[i]; });
    recount(campaign);
  }
  state.overview = overview;
  render(overview);
}

function recount(campaign) {
  const open = campaign.rounds.filter((r) => r.claimed === false && r.leaf);
  campaign.unclaimed = open.length;
  campaign.unclaimed_wei = open.reduce((sum, r) => sum + BigInt(r.amount_wei), 0n).toString();
  campaign.claimed_wei = campaign.rounds.filter((r) => r.claimed)
    .reduce((sum, r) => sum + BigInt(r.amount_wei), 0n).toString();
}

const percent = (x) => (x === null ? "–" : `${(100 * x).toFixed(2)} %`);
const loss = (x) => (x === null ? "–" : x.toPrecision(3));
const claimText = (c) => (c === null ? "–" : c ? "claimed" : "unclaimed");

// Each cell names its column in data-label: on a phone the rows are shown as cards.
function roundRow(r) {
  const claimClass = r.claimed === null ? "" : r.claimed ? "is-claimed" : "is-unclaimed";
  return el("tr", {},
    el("td", { "data-label": "Round" }, r.round_id), el("td", { "data-label": "Status" }, r.status),
    el("td", { class: "amount", "data-label": "Contribution" }, percent(r.contribution)),
    el("td", { class: "amount", "data-label": "Copyright loss", title: r.copyright_loss === null ? null : String(r.copyright_loss) },
      loss(r.copyright_loss)),
    el("td", { class: "amount", "data-label": "Payment (tokens)", title: `${r.amount_wei} wei` }, formatTokens(r.amount_wei)),
    el("td", { class: `claim-status ${claimClass}`, "data-label": "Claim" }, claimText(r.claimed)));
}

function campaignBlock(campaign) {
  const head = ["Round", "Status", "Contribution", "Copyright loss", "Payment (tokens)", "Claim"];
  const amountCols = new Set([2, 3, 4]);
  const table = el("table", { class: "data holder-rounds" },
    el("thead", {}, el("tr", {}, head.map((h, i) => el("th", { scope: "col", class: amountCols.has(i) ? "amount" : null }, h)))),
    el("tbody", {}, campaign.rounds.map(roundRow)),
    el("tfoot", {}, el("tr", {},
      el("th", { scope: "row", colspan: 4 }, "Total"),
      el("td", { class: "amount", "data-label": "Payment (tokens)", title: `${campaign.total_wei} wei` },
        formatTokens(campaign.total_wei)),
      el("td", { "data-label": "Claim" }, `${campaign.unclaimed} unclaimed`))));
  const block = el("div", { class: "campaign", "data-campaign": campaign.campaign_id ?? "" },
    el("h4", {}, campaign.campaign_id === null ? "Campaign (not deployed)" : `Campaign ${campaign.campaign_id}`),
    el("div", { class: "table-scroll" }, table));
  if (campaign.campaign_id === null) return block;
  if (campaign.unclaimed > 0) {
    const tokens = formatTokens(campaign.unclaimed_wei);
    const plural = campaign.unclaimed === 1 ? "payment" : "payments";
    const button = el("button", { type: "button", class: "claim-all", title: `${campaign.unclaimed_wei} wei` },
      `Claim all ${campaign.unclaimed} unclaimed ${plural} (${tokens} tokens)`);
    button.addEventListener("click", () => act(button, () => claimAll(campaign)));
    block.append(el("p", { class: "claim-actions" }, button));
  } else {
    block.append(el("p", { class: "hint all-claimed" }, "Every payment of this campaign is claimed."));
  }
  return block;
}

function render(overview) {
  const box = $("campaigns");
  if (!overview.campaigns.length) {
    box.replaceChildren(el("p", { class: "empty" }, `${overview.address} took part in no round of this node.`));
    return;
  }
  box.replaceChildren(...overview.campaigns.map(campaignBlock),
    el("p", { class: "hint" }, "Claim flags read from the chain through your wallet."));
}

// -- claiming --------------------------------------------------------------------------------

const openLeaves = (campaign) => campaign.rounds.filter((r) => r.claimed === false && r.leaf).map((r) => r.leaf);
const toLeafClaim = (l) => ({ roundId: BigInt(l.round_id), index: BigInt(l.index), amount: BigInt(l.amount_wei), proof: l.proof });

async function claimAll(campaign) {
  const wallet = requireWallet();
  const leaves = openLeaves(campaign);
  const receipt = await writePool(wallet, "claimRounds",
    [BigInt(campaign.campaign_id), wallet.account, leaves.map(toLeafClaim)]);
  const total = leaves.reduce((sum, l) => sum + BigInt(l.amount_wei), 0n);
  await refresh();
  showMessage(`Claimed ${leaves.length} payment(s), ${formatTokens(total)} tokens, in transaction ` +
    `${receipt.transactionHash}.`, "success");
}

// -- paying another address ------------------------------------------------------------------

async function signRecipient() {
  const wallet = requireWallet();
  const raw = $("recipient").value.trim();
  if (!isAddress(raw, { strict: false })) throw new Error(`“${raw}” is not an address (0x and 40 hex digits, checksum right if mixed case).`);
  const recipient = getAddress(raw);
  const minutes = Number.parseInt($("deadline-minutes").value, 10);
  if (!(minutes >= 1)) throw new Error("Give how many minutes the authorisation stays valid (1 or more).");
  const campaign = state.overview?.campaigns.find((c) => c.campaign_id !== null && c.unclaimed > 0);
  if (!campaign) throw new Error("You have no unclaimed payment to authorise.");
  const leaves = openLeaves(campaign);
  const nonce = await readPool(wallet, "nonces", [wallet.account]);
  const block = await wallet.publicClient.getBlock();
  const deadline = block.timestamp + BigInt(minutes * 60);
  const signature = await wallet.walletClient.signTypedData({
    account: wallet.account,
    domain: { name: DOMAIN_NAME, version: DOMAIN_VERSION, chainId: wallet.config.chain_id, verifyingContract: wallet.config.pool },
    types: RECIPIENT_TYPES,
    primaryType: "ClaimRecipient",
    message: { campaignId: BigInt(campaign.campaign_id), account: wallet.account, recipient, nonce, deadline },
  });
  const authorisation = {
    chain_id: wallet.config.chain_id, pool: wallet.config.pool, campaign_id: campaign.campaign_id,
    account: wallet.account, recipient, nonce: nonce.toString(), deadline: deadline.toString(),
    leaves, signature,
  };
  $("authorisation").value = JSON.stringify(authorisation, null, 2);
  $("authorisation-output").hidden = false;
  showMessage(`Signed: ${leaves.length} payment(s), ${formatTokens(campaign.unclaimed_wei)} tokens, ` +
    `payable to ${recipient} until ${new Date(Number(deadline) * 1000).toISOString()} (chain time). ` +
    "Copy the authorisation below.", "success");
}

async function copyAuthorisation() {
  const text = $("authorisation").value;
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    $("authorisation").select(); // no clipboard API here (an insecure origin): select for Ctrl+C
    document.execCommand("copy");
  }
  showMessage("The authorisation is copied.", "info");
}

function parseAuthorisation(text) {
  let auth;
  try {
    auth = JSON.parse(text);
  } catch (error) {
    throw new Error(`The authorisation is not valid JSON (${error.message}).`);
  }
  const missing = ["chain_id", "pool", "campaign_id", "account", "recipient", "deadline", "leaves", "signature"]
    .filter((k) => auth?.[k] === undefined || auth?.[k] === null);
  if (missing.length) throw new Error(`The authorisation lacks ${missing.join(", ")}.`);
  if (!Array.isArray(auth.leaves) || !auth.leaves.length) throw new Error("The authorisation names no payment (leaves is empty).");
  for (const key of ["account", "recipient", "pool"]) {
    if (!isAddress(String(auth[key]), { strict: false })) throw new Error(`The authorisation's ${key} is not an address.`);
  }
  return auth;
}

async function submitAuthorisation() {
  const wallet = requireWallet();
  const auth = parseAuthorisation($("authorisation-input").value);
  if (Number(auth.chain_id) !== wallet.config.chain_id || getAddress(auth.pool) !== getAddress(wallet.config.pool)) {
    throw new Error(`This authorisation is for pool ${auth.pool} on chain ${auth.chain_id}, not this ` +
      `node's pool ${wallet.config.pool} on chain ${wallet.config.chain_id}.`);
  }
  const receipt = await writePool(wallet, "claimRoundsTo", [
    BigInt(auth.campaign_id), getAddress(auth.account), auth.leaves.map(toLeafClaim),
    getAddress(auth.recipient), BigInt(auth.deadline), auth.signature,
  ]);
  const total = auth.leaves.reduce((sum, l) => sum + BigInt(l.amount_wei), 0n);
  await refresh();
  showMessage(`Paid ${formatTokens(total)} tokens (${auth.leaves.length} payment(s) of ${auth.account}) ` +
    `to ${auth.recipient} in transaction ${receipt.transactionHash}.`, "success");
}

// -- registration ----------------------------------------------------------------------------

function renderCaptionInputs() {
  const files = [...$("reg-images").files];
  const list = $("reg-caption-list");
  list.replaceChildren(...files.map((file, i) => el("div", { class: "caption-row" },
    el("label", { for: `reg-caption-${i}` }, `Caption for ${file.name}`),
    el("input", { id: `reg-caption-${i}`, class: "reg-caption", maxlength: 200, autocomplete: "off" }))));
  $("reg-captions").hidden = files.length === 0;
}

function readPrice(text) {
  const value = text.trim();
  if (!/^[0-9]+(\.[0-9]{1,18})?$/.test(value)) {
    throw new Error(`Reservation price “${value}” is not a number of tokens (e.g. 12.5, at most 18 decimals).`);
  }
  return parseUnits(value, 18);
}

async function register() {
  const wallet = requireWallet();
  const form = $("register-form");
  const limits = {
    maxImages: Number(form.dataset.maxImages), minImages: Number(form.dataset.minImages),
    maxImageBytes: Number(form.dataset.maxImageBytes), maxTotalBytes: Number(form.dataset.maxTotalBytes),
  };
  const files = [...$("reg-images").files];
  const problem = checkFiles(files, limits);
  if (problem) throw new Error(problem);
  const texts = [...document.querySelectorAll(".reg-caption")].map((input) => input.value);
  const given = texts.filter((t) => t.trim()).length;
  if (given && given !== files.length) throw new Error("Give a caption for every image, or none.");
  // issued_at is whole seconds and must be newer than the address's stored registration: a
  // replacement signed within the same second as this page's last registration gets +1 s.
  const issuedAt = Math.max(Math.floor(Date.now() / 1000), state.lastIssuedAt + 1);
  const { form: body } = await buildRegistration({
    wallet, name: $("reg-name").value.trim(), priceWei: readPrice($("reg-price").value), files,
    captions: given ? texts : null, replace: $("reg-replace").checked, issuedAt,
  });
  state.lastIssuedAt = issuedAt;
  const stored = await postForm("/holders", body);
  showMessage(`Registered “${stored.name}”: ${stored.n_images} image(s) for ${stored.address}, ` +
    `reservation price ${formatTokens(stored.reservation_price_wei)} tokens.`, "success");
}

// -- wiring ----------------------------------------------------------------------------------

/** Run `task` for `button` (busy, errors described), then bring its message into view: the
 * messages region is at the top, the forms further down. */
async function act(button, task) {
  await busy(button, task, describe);
  const shown = document.querySelector("#messages .message");
  if (shown) shown.scrollIntoView({ block: "nearest" });
}

function onSubmit(formId, buttonId, task) {
  const form = $(formId);
  if (!form) return;
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    act($(buttonId), task);
  });
}

function start() {
  $("connect").addEventListener("click", () => act($("connect"), connectWallet));
  $("switch-network").addEventListener("click", () => act($("switch-network"), onSwitch));
  $("copy-authorisation").addEventListener("click", () => act($("copy-authorisation"), copyAuthorisation));
  onSubmit("recipient-form", "sign-recipient", signRecipient);
  onSubmit("submit-form", "submit-authorisation", submitAuthorisation);
  onSubmit("register-form", "register", register);
  $("reg-images")?.addEventListener("change", renderCaptionInputs);
  window.ethereum?.on?.("accountsChanged", () => {
    if (!state.wallet) return;
    state.wallet = null;
    $("account").textContent = "";
    $("connect").textContent = "Connect wallet";
    showMessage("Your wallet switched accounts: connect again to see that account's rounds.", "info");
  });
  document.body.dataset.ready = "true"; // the script has wired the page (tests wait for it)
}

start();
