// The sponsor page (GET /sponsor): charts of the node's report (GET /campaigns/{id}/report, the
// data of the page's server-rendered tables), and with a wallet: the escrow read from the
// chain, funding by sponsor, the claim deadline with a live countdown in chain time, funding or
// topping up (ERC-20: approve, then fund; native coin: fund with value) and reclaiming the
// connected sponsor's share after the deadline.
//
// Amounts are bigint wei everywhere; the charts draw tokens as Numbers (drawing only: every
// exact figure is in the tables and in each dataset's `wei` list).
import { BarController, BarElement, CategoryScale, Chart, Legend, LinearScale, Tooltip } from "chart.js";
import { formatUnits, parseUnits } from "viem";
import { busy, clearMessages, el, formatCountdown, formatTokens, shortHex, showMessage } from "./lib/ui.js";
import { getJson } from "./lib/api.js";
import { connect, describeError, loadConfig, poolAbi, readPool, readToken, writePool, writeToken } from "./lib/wallet.js";

Chart.register(BarController, BarElement, CategoryScale, LinearScale, Legend, Tooltip);

const REVOKED = 3; // CompensationPool.RoundStatus.Revoked
const COLORS = ["#2457a6", "#d9822b", "#2f9e6e", "#a63d8f", "#7a8b99", "#c4a000", "#1b8fb3", "#b3432f"];

const $ = (id) => document.getElementById(id);
const page = $("sponsor-data").dataset;
const campaignId = BigInt(page.campaignId);
let report = null; // GET /campaigns/{id}/report, once loaded

// -- charts ---------------------------------------------------------------------------------

const tokens = (wei) => Number(formatUnits(BigInt(wei), 18));

function barChart(canvas, labels, datasets, stacked) {
  return new Chart(canvas, {
    type: "bar",
    data: { labels, datasets },
    options: {
      animation: false,
      maintainAspectRatio: false,
      scales: {
        x: { stacked, ticks: { autoSkip: true } },
        y: { stacked, beginAtZero: true, title: { display: true, text: "tokens" } },
      },
      plugins: {
        tooltip: {
          callbacks: { label: (item) => `${item.dataset.label}: ${formatTokens(item.dataset.wei[item.dataIndex])} tokens` },
        },
      },
    },
  });
}

function dataset(label, wei, color) {
  return { label, wei, data: wei.map(tokens), backgroundColor: color };
}

/** Draw both charts from `report`; returns them (exposed as window.sponsorCharts). */
function drawCharts() {
  if (!report.rounds.length) return {};
  const rounds = report.rounds;
  const budgets = barChart($("chart-rounds"), rounds.map((r) => `Round ${r.round_id}`), [
    dataset("Budget", rounds.map((r) => r.budget_wei), COLORS[0]),
    dataset("Allocated", rounds.map((r) => r.allocated_wei), COLORS[1]),
    dataset("Claimed", rounds.map((r) => r.claimed_wei), COLORS[2]),
  ], false);
  const payments = barChart($("chart-payments"), report.holders.map((h) => h.name),
    rounds.map((r, i) => dataset(`Round ${r.round_id}`, report.holders.map((h) => h.payments_wei[i]),
      COLORS[i % COLORS.length])), true);
  return { budgets, payments };
}

// -- the wallet part --------------------------------------------------------------------------

const state = { wallet: null, unit: { decimals: 18, symbol: "tokens" }, chain: null, timer: null };

function utcDate(seconds) {
  return `${new Date(Number(seconds) * 1000).toISOString().replace("T", " ").slice(0, 19)} UTC`;
}

function amount(wei) {
  return el("span", { class: "amount", title: `${wei} wei` }, `${formatTokens(wei, state.unit.decimals)} ${state.unit.symbol}`);
}

async function tokenUnit(wallet) {
  if (wallet.config.native) return { decimals: 18, symbol: "ETH" };
  const [decimals, symbol] = await Promise.all([readToken(wallet, "decimals"), readToken(wallet, "symbol")]);
  return { decimals: Number(decimals), symbol };
}

/** Claimed on chain: Σ (total − remaining) over the posted rounds that are not revoked. */
async function claimedOnChain(wallet, nextRoundId) {
  const ids = [];
  for (let r = 1n; r < nextRoundId; r++) ids.push(r);
  const rounds = await Promise.all(ids.map((r) => readPool(wallet, "getRound", [campaignId, r])));
  return rounds.filter((r) => r.status !== REVOKED).reduce((sum, r) => sum + (r.total - r.remaining), 0n);
}

/** Funding per sponsor from the pool's `Funded` events of this campaign (a Map address → wei),
 * or null when the wallet's node will not return them (some limit how many blocks one log
 * query may span): the page then shows the connected account's own funding only. */
async function fundedBySponsor(wallet) {
  let events;
  try {
    events = await wallet.publicClient.getContractEvents({
      address: wallet.config.pool, abi: poolAbi, eventName: "Funded", args: { campaignId }, fromBlock: 0n, strict: true,
    });
  } catch (error) {
    console.warn("Funded events unavailable:", error);
    return null;
  }
  const totals = new Map();
  for (const { args } of events) totals.set(args.sponsor, (totals.get(args.sponsor) ?? 0n) + args.amount);
  return totals;
}

/** Read everything the wallet panel shows from the chain (one round of parallel reads). */
async function readChain(wallet) {
  const account = wallet.account;
  const [campaign, funded, reclaimed, block, sponsors, balance] = await Promise.all([
    readPool(wallet, "getCampaign", [campaignId]),
    readPool(wallet, "fundedBy", [campaignId, account]),
    readPool(wallet, "hasReclaimed", [campaignId, account]),
    wallet.publicClient.getBlock({ blockTag: "latest" }),
    fundedBySponsor(wallet),
    wallet.config.native ? wallet.publicClient.getBalance({ address: account }) : readToken(wallet, "balanceOf", [account]),
  ]);
  const claimed = await claimedOnChain(wallet, campaign.nextRoundId);
  return {
    campaign, funded, reclaimed, sponsors, balance, claimed,
    chainNow: block.timestamp, readAt: Date.now() / 1000,
  };
}

/** The connected sponsor's share: exact once settled, else as of now (if nothing more is claimed). */
function share(chain) {
  const c = chain.campaign;
  if (c.totalFunded === 0n) return { wei: 0n, exact: true };
  const unclaimed = c.settled ? c.unclaimedAtExpiry : c.totalFunded - chain.claimed;
  return { wei: (chain.funded * unclaimed) / c.totalFunded, exact: c.settled };
}

function renderEscrow(chain) {
  const c = chain.campaign;
  const mine = share(chain);
  const shareLabel = chain.reclaimed ? "Your share (reclaimed)" : mine.exact ? "Your share" : "Your share if nothing more is claimed";
  const rows = [
    ["total-funded", "Total funded", c.totalFunded],
    ["allocated", "Allocated to rounds", c.totalAllocated],
    ["unallocated", "Unallocated", c.totalFunded - c.totalAllocated],
    ["claimed", "Claimed by holders", chain.claimed],
    ["unclaimed", "Allocated, not yet claimed", c.totalAllocated - chain.claimed],
    ["funded-by", "Your funding", chain.funded],
    ["share", shareLabel, mine.wei],
    ["balance", "Your balance", chain.balance],
  ];
  $("escrow").replaceChildren(
    el("dt", {}, "Connected account"),
    el("dd", { class: "mono", "data-field": "account" }, state.wallet.account),
    ...rows.flatMap(([field, term, wei]) => [
      el("dt", {}, term), el("dd", { "data-field": field, "data-wei": wei.toString() }, amount(wei)),
    ]),
  );
}

function renderFunders(chain) {
  const account = state.wallet.account;
  const totals = new Map(chain.sponsors ?? []);
  if (chain.funded > 0n) totals.set(account, chain.funded); // fundedBy is what the contract credits
  const body = $("funders").tBodies[0];
  $("funders-note").textContent = chain.sponsors ? "" : "Your wallet's node did not return the pool's " +
    "Funded events, so only your own funding is listed.";
  if (!totals.size) {
    body.replaceChildren(el("tr", {}, el("td", { colspan: 2 },
      chain.sponsors ? "Nobody has funded this campaign yet." : "You have not funded this campaign.")));
    return;
  }
  body.replaceChildren(...[...totals].sort((a, b) => (b[1] > a[1] ? 1 : b[1] < a[1] ? -1 : 0)).map(([sponsor, wei]) =>
    el("tr", { "data-sponsor": sponsor },
      el("td", { class: "mono", title: sponsor }, shortHex(sponsor), sponsor === account ? " (you)" : ""),
      el("td", { class: "num", "data-wei": wei.toString() }, amount(wei)))));
}

/** Chain time now, from the last block read and the seconds elapsed since. */
function chainNow() {
  const chain = state.chain;
  return Number(chain.chainNow) + (Date.now() / 1000 - chain.readAt);
}

function renderDeadline() {
  const chain = state.chain;
  const deadline = chain.campaign.claimDeadline;
  const left = Number(deadline) - chainNow();
  const reclaim = $("reclaim");
  const why = $("reclaim-why");
  const notes = [];
  if (chain.funded === 0n) notes.push("This account did not fund this campaign: it has no share to reclaim.");
  if (chain.reclaimed) notes.push("Done: this account has reclaimed its share (the contract refuses a second reclaim).");
  if (left > 0 && chain.chainNow < deadline) {
    $("deadline").textContent = `Claim deadline: ${utcDate(deadline)}, in ${formatCountdown(left)} (chain time).`;
    reclaim.disabled = true;
    why.textContent = [`Claims are open until ${utcDate(deadline)} (in ${formatCountdown(left)}); ` +
      "you can reclaim after that.", ...notes].join(" ");
  } else {
    $("deadline").textContent = `Claim deadline: ${utcDate(deadline)}, passed: holders can no longer claim.`;
    reclaim.disabled = false;
    why.textContent = notes.length ? notes.join(" ") : `Your share: ${formatTokens(share(chain).wei, state.unit.decimals)} ${state.unit.symbol}.`;
  }
  if (left <= 0 && chain.chainNow < deadline && !state.rereading) { // the deadline just passed: read the chain again
    state.rereading = true;
    refresh().finally(() => { state.rereading = false; });
  }
}

function renderFundHint() {
  const posting = state.chain.campaign.postingDeadline;
  $("fund-hint").textContent = Number(posting) > chainNow()
    ? `In ${state.unit.symbol}, up to ${state.unit.decimals} decimals. Funding closes ${utcDate(posting)}.` +
      (state.wallet.config.native ? "" : " Two wallet steps: approve the pool to take the amount, then fund.")
    : `Funding closed ${utcDate(posting)}: the contract refuses new funds (PostingClosed).`;
}

async function refresh() {
  state.chain = await readChain(state.wallet);
  renderEscrow(state.chain);
  renderFunders(state.chain);
  renderFundHint();
  renderDeadline();
}

async function onConnect() {
  clearMessages();
  const config = await loadConfig();
  const wallet = await connect({ ...config, campaign_id: Number(campaignId) });
  const { token } = await readPool(wallet, "getCampaign", [campaignId]); // this campaign's own token
  wallet.config = { ...wallet.config, token, native: BigInt(token) === 0n };
  state.wallet = wallet;
  state.unit = await tokenUnit(state.wallet);
  await refresh();
  $("wallet-panel").hidden = false;
  $("connect").textContent = "Read the chain again";
  clearInterval(state.timer);
  state.timer = setInterval(() => state.chain && renderDeadline(), 1000);
}

// -- actions ----------------------------------------------------------------------------------

/** `text` in tokens → wei (bigint), exactly; throws Error with a sentence for a bad amount. */
function parseAmount(text) {
  const clean = text.trim().replace(/[,_\s]/g, "");
  const { decimals, symbol } = state.unit;
  if (!/^\d*\.?\d+$|^\d+\.$/.test(clean)) throw new Error(`Enter an amount in ${symbol}, e.g. 250.5.`);
  const fraction = clean.split(".")[1] ?? "";
  if (fraction.length > decimals) throw new Error(`${symbol} have at most ${decimals} decimals; "${text.trim()}" has ${fraction.length}.`);
  const wei = parseUnits(clean, decimals);
  if (wei === 0n) throw new Error("Enter an amount above zero.");
  return wei;
}

function step(list, text) {
  const item = el("li", { class: "step step-waiting" }, text, el("span", { class: "step-state" }, ": waiting"));
  list.append(item);
  return {
    set(kind, detail) {
      item.className = `step step-${kind}`;
      item.lastChild.textContent = `: ${detail}`;
    },
  };
}

async function run(entry, action) {
  entry.set("active", "confirm in your wallet…");
  try {
    const receipt = await action();
    entry.set("done", `done (transaction ${shortHex(receipt.transactionHash)})`);
    return receipt;
  } catch (error) {
    entry.set("failed", "failed");
    throw error;
  }
}

async function onFund(event) {
  event.preventDefault();
  clearMessages();
  const wallet = state.wallet;
  const wei = parseAmount($("fund-amount").value);
  const label = `${formatTokens(wei, state.unit.decimals)} ${state.unit.symbol}`;
  const steps = $("fund-steps");
  steps.replaceChildren();
  if (wallet.config.native) {
    await run(step(steps, `Step 1 of 1: fund ${label}`), () => writePool(wallet, "fund", [campaignId, wei], { value: wei }));
  } else {
    const balance = await readToken(wallet, "balanceOf", [wallet.account]);
    if (balance < wei) {
      throw new Error(`Your balance is ${formatTokens(balance, state.unit.decimals)} ${state.unit.symbol}: not enough to fund ${label}.`);
    }
    const approve = step(steps, `Step 1 of 2: approve the pool to take ${label}`);
    const fund = step(steps, `Step 2 of 2: fund ${label}`);
    const allowance = await readToken(wallet, "allowance", [wallet.account, wallet.config.pool]);
    if (allowance >= wei) approve.set("done", "not needed (the pool may already take it)");
    else await run(approve, () => writeToken(wallet, "approve", [wallet.config.pool, wei]));
    await run(fund, () => writePool(wallet, "fund", [campaignId, wei]));
  }
  $("fund-amount").value = "";
  await refresh();
  showMessage(`Funded ${label}: the campaign now holds ${formatTokens(state.chain.campaign.totalFunded, state.unit.decimals)} ` +
    `${state.unit.symbol} in total, ${formatTokens(state.chain.funded, state.unit.decimals)} of it from you.`, "success");
}

async function onReclaim() {
  clearMessages();
  await writePool(state.wallet, "reclaim", [campaignId]);
  await refresh(); // reclaiming settles the campaign: the share is now exact
  showMessage(`Done: you reclaimed your share, ${formatTokens(share(state.chain).wei, state.unit.decimals)} ` +
    `${state.unit.symbol}.`, "success");
}

// -- wiring -----------------------------------------------------------------------------------

/** Run `task` with busy(button, …); then give the focus back to `button` if disabling it
 * dropped the focus to the page (keyboard users stay where they were). */
async function act(button, task, focusAfter = button) {
  const hadFocus = document.activeElement === button;
  await busy(button, task, describeError);
  if (state.chain) renderDeadline(); // busy() re-enabled the buttons: the deadline decides
  if (hadFocus && (document.activeElement === document.body || document.activeElement === null)) {
    (focusAfter.disabled ? button : focusAfter).focus();
  }
}

async function loadCharts() {
  try {
    report = await getJson(page.reportUrl);
    window.sponsorCharts = drawCharts();
  } catch (error) {
    showMessage(`The charts could not be drawn: ${describeError(error)} The tables below are the node's data.`, "error",
      { replace: false });
  }
}

function wire() {
  loadCharts();
  const connectButton = $("connect");
  connectButton.addEventListener("click", () => act(connectButton, onConnect));
  $("fund-form").addEventListener("submit", (event) => {
    event.preventDefault();
    act($("fund"), () => onFund(event), $("fund-amount"));
  });
  const reclaim = $("reclaim");
  reclaim.addEventListener("click", () => act(reclaim, onReclaim));
  window.ethereum?.on?.("chainChanged", () => {
    showMessage("Your wallet changed network: press “Read the chain again” to reconnect.", "info");
  });
  window.ethereum?.on?.("accountsChanged", () => {
    showMessage("Your wallet changed account: press “Read the chain again” to reconnect.", "info");
  });
}

try {
  wire();
} catch (error) {
  showMessage(`The sponsor page could not start: ${describeError(error)}`, "error");
}
